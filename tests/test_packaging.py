"""The wheel a user installs: built with `python -m build`, installed into a clean venv
without the emulator extra, it has `rcfs --version`, mounts a real (emulated) account,
and says how to get the emulator when asked for the demo.

The build runs offline (`--no-isolation`, with this venv's setuptools and wheel, from
the test extra) on a copy of the sources, so the work tree gets no build/ or egg-info.
Installing the wheel's dependencies into the new venv needs the package index (or the
pip cache) with the versions of constraints.txt; without one the test skips.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clihelp import rcfs_mount, run_rcfs
from conftest import ROOT
from fusehelp import _is_mounted, force_unmount, fuse_required
from rcfs.emulator import seed

pytestmark = [pytest.mark.slow, fuse_required]

# The emulator's stack, which only `rcfs[emulator]` installs (pyproject.toml).
EMULATOR_DISTRIBUTIONS = ("hypercorn", "starlette", "python-multipart", "Pillow")
NETWORK_FAILURES = ("No matching distribution", "Could not find a version", "NewConnectionError",
                    "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeout")


def copy_sources(dest: Path) -> Path:
    """The files a build reads, without caches or the venv."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "rcfs", dest / "rcfs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    for module in ("build", "setuptools", "wheel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"no offline build: {module} is not installed in this venv (pip install -e '.[test]')")
    base = tmp_path_factory.mktemp("wheel")
    src = copy_sources(base / "src")
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                             str(base / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [whl] = (base / "dist").glob("rcfs-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    """A new venv with nothing but the wheel and what it requires (no extras)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    lock = ["-c", str(ROOT / "constraints.txt")] if (ROOT / "constraints.txt").exists() else []
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--retries", "1", "--timeout", "30",
                             *lock, str(wheel)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        if any(s in result.stderr for s in NETWORK_FAILURES):
            pytest.skip(f"cannot install the wheel's dependencies without the index: {result.stderr[-500:]}")
        pytest.fail(f"pip install of the wheel failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return venv


def wheel_env(venv: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    # Nothing of the dev venv leaks in: no PYTHONPATH, and HOME/XDG point into tmp_path.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RC_", "XDG_", "PYTHON", "VIRTUAL_ENV", "RCFS_EMU_"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp_path / "home"),
               XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_the_wheel_has_no_emulator_stack(wheel_venv, tmp_path):
    py = str(wheel_venv / "bin" / "python")
    code = ("import importlib.metadata as m, sys\n"
            "missing = []\n"
            f"for name in {list(EMULATOR_DISTRIBUTIONS)!r}:\n"
            "    try: m.version(name)\n"
            "    except m.PackageNotFoundError: missing.append(name)\n"
            "print(','.join(missing))\n"
            "import rcfs.cli, rcfs.mount, rcfs.api.client, rcfs.fs\n"  # mounting imports fine
            "print(rcfs.cli.__file__)\n")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env=wheel_env(wheel_venv, tmp_path)).stdout.split()
    assert out[0].split(",") == list(EMULATOR_DISTRIBUTIONS)
    assert out[1].startswith(str(wheel_venv))  # the installed copy, not the work tree


def test_rcfs_version_from_the_console_script(wheel_venv, tmp_path):
    from importlib.metadata import version

    result = run_rcfs(["--version"], cmd=[str(wheel_venv / "bin" / "rcfs")], env=wheel_env(wheel_venv, tmp_path),
                      cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"rcfs {version('rcfs')}", result


@pytest.mark.parametrize("args", [["mount", "--demo", "MP"], ["emulator"]], ids=["mount-demo", "emulator"])
def test_the_demo_without_the_extra_says_how_to_get_it(wheel_venv, tmp_path, args):
    mp = tmp_path / "mp"
    mp.mkdir()
    args = [str(mp) if a == "MP" else a for a in args]
    try:
        result = run_rcfs(args, cmd=[str(wheel_venv / "bin" / "rcfs")], env=wheel_env(wheel_venv, tmp_path),
                          cwd=tmp_path, timeout=30)
    finally:
        force_unmount(mp)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "pip install 'rcfs[emulator]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not _is_mounted(mp) and list(mp.iterdir()) == []


def test_the_installed_console_script_mounts_an_account(wheel_venv, start_emulator, tmp_path):
    srv = start_emulator(window=1.0)  # from the dev venv: the wheel venv has no emulator
    store = seed.build_store(srv_config())
    env = wheel_env(wheel_venv, tmp_path, **srv.env)
    mp = tmp_path / "rc"
    with rcfs_mount(mp, ["--state-dir", str(tmp_path / "rcfs-state"), "--debug"], env=env,
                    cmd=[str(wheel_venv / "bin" / "rcfs")]) as proc:
        assert _mounting_binary(proc.pid).startswith(str(wheel_venv))
        assert sorted(os.listdir(mp)) == ["company", "exports", "faxes", "greetings", "mms", "outbox", "recordings", "texts", "voicemail"]  # the demo user is an admin
        faxes = sorted((mp / "faxes").iterdir())
        assert faxes
        fax = faxes[0]
        data = fax.read_bytes()
        msg = store.messages[int(os.getxattr(fax, "user.rc.id"))]
        att_id = int(os.getxattr(fax, "user.rc.attachment_id"))
        media = next(a.media for a in msg.attachments if a.id == att_id)
        assert data and data == media.read(0, media.size)
    assert not _is_mounted(mp)
    assert proc.returncode == 0


def srv_config():
    from conftest import build_config

    return build_config(window=1.0)


def _mounting_binary(pid: int) -> str:
    """The script the mount process runs (argv[1] of `python .../bin/rcfs mount ...`)."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    return next(a.decode() for a in argv if a.endswith(b"/bin/rcfs"))
