"""Extended attributes through a real mount: what `ls -l` costs, what copy tools keep,
and what a terminal is shown (issue 20, items 1 and 4).

`ls -l` (coreutils) asks every file for `security.selinux` and `system.posix_acl_access`
and stops asking for the rest of a device only when told "not supported"; rcfs serves
only `user.rc.*`, so everything else must be ENOTSUP (design/FUSE-SPEED.md). strace
counts what `ls` asked: each call it makes is one request the daemon answers (the
kernel caches no xattr answer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from conftest import spawn_emulator
from fusehelp import fuse_required, mounted

pytestmark = fuse_required

FAXES = 300  # enough that a per-file cost cannot hide in the handful a listing may ask
HOSTILE_FROM = "+1555\x1b[2J0188\u202e\x9b31m"  # ESC clear-screen, a bidi override, a C1 CSI


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    srv = spawn_emulator(tmp_path_factory.mktemp("emu"), window=1.0, scale="listing", faxes=FAXES)
    try:
        # A fax from a caller id with escape sequences in it (the API passes such text on).
        r = httpx.post(srv.platform + "/_emulator/messages", json={"type": "Fax", "from": HOSTILE_FROM},
                       timeout=10)
        assert r.status_code == 201, r.text
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def mnt(emu, tmp_path_factory):
    base = tmp_path_factory.mktemp("mnt")
    with mounted(base / "rc", state_dir=base / "state", server_url=emu.platform, client_id=emu.client_id,
                 client_secret=emu.client_secret, jwt=emu.jwt):
        yield base / "rc"


def _xattr_calls(tmp_path: Path, argv: list[str]) -> list[str]:
    """The xattr system calls `argv` makes, one strace line each (`name(args) = result`)."""
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=getxattr,lgetxattr,fgetxattr,listxattr,llistxattr,flistxattr", "-o", str(trace), *argv],
                   check=True, capture_output=True, timeout=300)
    return [line for line in trace.read_text().splitlines() if "xattr(" in line]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_warm_ls_l_asks_no_xattr_per_file(mnt, tmp_path):
    faxes = mnt / "faxes"
    files = os.listdir(faxes)  # the first listing; what follows is warm
    assert len(files) >= FAXES
    subprocess.run(["ls", "-l", str(faxes)], check=True, capture_output=True, timeout=300)
    calls = _xattr_calls(tmp_path, ["ls", "-l", str(faxes)])
    # Told "not supported" once, ls asks nothing more on this device. (Answered "no such
    # attribute", it asked both names of every file: 2 x 300 requests.)
    assert 1 <= len(calls) <= 4, calls[:6]
    assert all("EOPNOTSUPP" in line or "ENOTSUP" in line for line in calls), calls


def test_names_outside_user_are_not_supported_and_a_missing_user_name_is_no_data(mnt):
    fax = sorted((mnt / "faxes").iterdir())[0]
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x", "security.capability"):
        with pytest.raises(OSError) as info:
            os.getxattr(fax, name)
        assert info.value.errno == 95, name  # EOPNOTSUPP
    with pytest.raises(OSError) as info:
        os.getxattr(fax, "user.rc.no_such_name")
    assert info.value.errno == 61  # ENODATA: the file lacks it, the names still work
    assert os.getxattr(fax, "user.rc.type") == b"Fax"


def test_ls_alone_is_told_listxattr_is_not_supported(mnt, tmp_path):
    """coreutils >= 9.4 lists every file's xattrs during `ls -l` (three times per file
    when the names exceed 152 bytes). A process named `ls` is told "not supported";
    anyone else gets the names. (Debian 12's ls is 9.1: a program named ls stands in.)"""
    fax = sorted((mnt / "faxes").iterdir())[0]
    fake_ls = tmp_path / "ls"  # comm is the executable's file name
    fake_ls.symlink_to(os.path.realpath(sys.executable))
    code = ("import os, sys\n"
            "try:\n    os.listxattr(sys.argv[1]); print('listed')\n"
            "except OSError as e:\n    print(e.errno)\n")
    out = subprocess.run([str(fake_ls), "-c", code, str(fax)], capture_output=True, text=True, check=True,
                         timeout=60).stdout.strip()
    assert out == "95"
    names = os.listxattr(fax)
    assert "user.rc.id" in names and "user.rc.from" in names


def _user_xattrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith("user.rc.")}


def test_copy_tools_keep_the_xattrs(mnt, tmp_path):
    fax = sorted((mnt / "faxes").iterdir())[0]
    fax.read_bytes()  # its size is learned (user.rc.size) before the copies, not during one
    want = _user_xattrs(fax)
    assert len(want) >= 8
    out = subprocess.run(["getfattr", "-d", str(fax)], capture_output=True, text=True, check=True).stdout
    assert all(f"{name}=" in out for name in want), out
    (tmp_path / "cp").mkdir()
    subprocess.run(["cp", "-a", str(fax), str(tmp_path / "cp")], check=True, capture_output=True, timeout=120)
    assert _user_xattrs(tmp_path / "cp" / fax.name) == want
    subprocess.run(["rsync", "-X", str(fax), str(tmp_path / "rsync")], check=True, capture_output=True,
                   timeout=120)
    assert _user_xattrs(tmp_path / "rsync") == want
    tarball = tmp_path / "x.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=user.*", "-cf", str(tarball), "-C", str(fax.parent),
                    fax.name], check=True, capture_output=True, timeout=120)
    with tarfile.open(tarball) as tar:
        member = tar.getmember(fax.name)
    stored = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
              for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    assert stored == want


def test_xattr_values_carry_no_control_or_format_characters(mnt):
    fax = next(p for p in (mnt / "faxes").iterdir() if b"2J0188" in os.getxattr(p, "user.rc.from"))
    # What `attr -g` / `getfattr --only-values` print raw to a terminal:
    raw = subprocess.run(["getfattr", "--only-values", "-n", "user.rc.from", str(fax)], capture_output=True,
                         check=True).stdout
    assert b"\x1b" not in raw and "\u202e".encode() not in raw and "\x9b".encode() not in raw
    assert raw.startswith(b"+1555_[2J0188")
    for name in os.listxattr(fax):
        value = os.getxattr(fax, name).decode()
        assert not any(ch in value for ch in ("\x1b", "\u202e", "\x9b")), (name, value)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_warm_ls_l_costs_the_daemon_a_handful_of_requests_not_one_per_file(mnt, tmp_path):
    """Counted at the daemon: every answer to the kernel is one writev on /dev/fuse. A
    warm `ls -l` needs the listing (READDIRPLUS, which carries every entry's attributes)
    and nothing per file: neither xattrs nor attributes of files whose size is still
    provisional (a third of these faxes: with a timeout of 0 each cost a GETATTR)."""
    faxes = mnt / "faxes"
    files = os.listdir(faxes)
    assert sum(1 for name in files if os.stat(faxes / name).st_size == 4096) >= 30  # (provisional sizes)
    subprocess.run(["ls", "-l", str(faxes)], check=True, capture_output=True, timeout=300)
    daemon = int(os.getxattr(mnt, "user.rc.pid"))
    trace = tmp_path / "daemon.trace"
    tracer = subprocess.Popen(["strace", "-f", "-p", str(daemon), "-e", "trace=writev", "-o", str(trace)],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert "attached" in tracer.stderr.readline()  # (tracing before ls starts)
        subprocess.run(["ls", "-l", str(faxes)], check=True, capture_output=True, timeout=300)
    finally:
        tracer.terminate()
        tracer.wait(timeout=30)
    answers = [line for line in trace.read_text().splitlines() if "writev(" in line]
    assert 1 <= len(answers) <= len(files) // 10, len(answers)
