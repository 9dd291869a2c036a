"""Every program the tests, benchmarks and rcfs itself run is installed on a fresh Debian
12 by scripts/_setup.sh, or comes with Debian's base system (issue 20 item 9: a fresh
machine failed three tests because nothing installed `unzip`, and this machine happened
to have it).

The programs are found in the code, not listed by hand: the first word of every argv
literal handed to something that runs it (`subprocess.run([...])`, `Popen`, helpers
named `run_*`/`*_trace`...), and every `shutil.which("...")`. Each must be in PACKAGE
(program -> the Debian package that ships it), and that package must be in APT_PACKAGES
of scripts/_setup.sh or be part of the base system (Priority: required, what
`debootstrap --variant=minbase` installs). Where the program is on this machine,
dpkg confirms the package, so the table cannot drift from the truth either.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "rcfs").rglob("*.py")),
           *sorted((ROOT / "scripts" / "benchlib").glob("*.py"))]

# program -> Debian 12 package that ships it
PACKAGE = {
    "apt-get": "apt", "bash": "bash", "sh": "dash", "cat": "coreutils", "cp": "coreutils",
    "dd": "coreutils", "du": "coreutils", "install": "coreutils", "ls": "coreutils",
    "mkdir": "coreutils", "mv": "coreutils", "sha256sum": "coreutils", "true": "coreutils",
    "mktemp": "coreutils", "tail": "coreutils", "stat": "coreutils", "inotifywait": "inotify-tools", "touch": "coreutils", "truncate": "coreutils", "sed": "sed",
    "redis-server": "redis-server", "redis-cli": "redis-tools",
    "find": "findutils", "tar": "tar", "mount": "mount", "umount": "mount", "setpriv": "util-linux",
    "git": "git", "curl": "curl", "file": "file", "fuser": "psmisc", "getfattr": "attr",
    "gio": "libglib2.0-bin", "rsync": "rsync", "strace": "strace", "unzip": "unzip",
    "fusermount3": "fuse3", "fusermount": "fuse3", "systemd-analyze": "systemd", "systemctl": "systemd",
    "rclone": "rclone", "httpdirfs": "httpdirfs", "dpkg": "dpkg", "dpkg-query": "dpkg", "dpkg-deb": "dpkg",
}
# Programs only a benchmark runs, which installs them itself (file that does it).
INSTALLED_BY_THEIR_SCRIPT = {"rclone": "scripts/benchlib/anchors.py", "httpdirfs": "scripts/benchlib/anchors.py"}
# Packages of Debian 12's base system (Priority: required), for a machine without them
# to ask; where dpkg knows the package, its own Priority field is used instead.
BASE = {"apt", "bash", "dash", "coreutils", "findutils", "tar", "mount", "util-linux", "grep", "sed",
        "gzip", "diffutils", "dpkg", "login", "passwd", "hostname", "debianutils"}
RUNNERS = re.compile(r"(^|_)(run|popen|check_output|check_call|call|exec\w*|spawn|trace|calls)($|_)", re.I)


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _first_word(node: ast.AST, lists: dict[str, ast.AST]) -> str | None:
    if isinstance(node, ast.Name) and node.id in lists:
        node = lists[node.id]
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def programs_called() -> dict[str, set[str]]:
    """{program: {files that run it}} from the sources."""
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        # argv lists built first and passed by name (`cmd = [...]; subprocess.run(cmd)`)
        lists = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, (ast.List, ast.Tuple))}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _callee(node)
            words: list[str | None] = []
            if name == "which" and node.args:
                arg = node.args[0]
                words.append(arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None)
            elif RUNNERS.search(name):
                words += [_first_word(a, lists) for a in node.args]
            for word in words:
                if word and not word.startswith(("-", "/", ".")) and re.fullmatch(r"[\w.+-]+", word):
                    found.setdefault(word, set()).add(str(path.relative_to(ROOT)))
    return found


def apt_packages() -> set[str]:
    text = (ROOT / "scripts" / "_setup.sh").read_text()
    m = re.search(r"^APT_PACKAGES=\(([^)]*)\)", text, re.M)
    assert m, "scripts/_setup.sh has no APT_PACKAGES=(...)"
    return set(m.group(1).split())


def _priority(package: str) -> str | None:
    if not shutil.which("dpkg-query"):
        return None
    out = subprocess.run(["dpkg-query", "-W", "-f=${Priority}", package], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.strip() or None if out.returncode == 0 else None


def test_the_scan_finds_what_the_tests_run():
    found = programs_called()
    # (a check of the check: programs known to be run in several ways)
    for program in ("unzip", "getfattr", "rsync", "fusermount3", "strace", "gio", "cp", "curl"):
        assert program in found, program


def test_every_program_run_is_installed_by_setup_or_in_the_base_system():
    installed = apt_packages()
    missing = {}
    for program, where in sorted(programs_called().items()):
        package = PACKAGE.get(program)
        if package is None:
            missing[program] = f"not in PACKAGE (run by {sorted(where)}): add it with its Debian package"
            continue
        if package in installed:
            continue
        if program in INSTALLED_BY_THEIR_SCRIPT:
            script = (ROOT / INSTALLED_BY_THEIR_SCRIPT[program]).read_text()
            assert f'"{program}"' in script and "apt-get" in script, program
            continue
        priority = _priority(package)
        if priority == "required" or (priority is None and package in BASE):
            continue
        missing[program] = f"package {package} is neither in APT_PACKAGES nor required (run by {sorted(where)})"
    assert not missing, missing


@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs dpkg")
def test_the_package_table_matches_what_dpkg_says():
    wrong = {}
    for program in programs_called():
        exe = shutil.which(program)
        if exe is None or program not in PACKAGE:
            continue
        owners = set()
        for candidate in {exe, os.path.realpath(exe)}:
            # usrmerge: dpkg may know /bin/x for /usr/bin/x and the other way round
            for alt in {candidate, candidate.replace("/usr/bin/", "/bin/"), candidate.replace("/usr/sbin/", "/sbin/")}:
                out = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True, timeout=30)
                if out.returncode == 0:
                    owners |= {p.strip() for line in out.stdout.splitlines()
                               for p in line.split(":", 1)[0].split(",")}
        if owners and PACKAGE[program] not in {o.split(":")[0] for o in owners}:
            wrong[program] = (PACKAGE[program], sorted(owners))
    assert not wrong, wrong
