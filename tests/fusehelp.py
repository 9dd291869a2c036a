"""Real FUSE mounts for tests: a subprocess per mount, waited on, always unmounted.

pyfuse3 allows one mount per process, and the serving process must never touch its
own mountpoint, so every mount runs `python -m rcfs mount` in a child process and the
test (another process) uses ordinary tools on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")

fuse_required = pytest.mark.skipif(
    not (os.path.exists("/dev/fuse") and FUSERMOUNT),
    reason="needs /dev/fuse and fusermount3 (apt-get install fuse3)",
)


def _is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh if len(line.split()) > 1)


def force_unmount(path: Path) -> None:
    """Lazy unmount, tolerant of 'not mounted'."""
    if _is_mounted(path):
        subprocess.run([FUSERMOUNT or "umount", "-u", "-z", str(path)], capture_output=True)


def emulator_media_url(server_url: str) -> str:
    """The media base URL of the emulator at `server_url` (its admin `info`): what a
    user of the emulator configures as RC_MEDIA_URL, its media being on another port."""
    import httpx

    try:
        r = httpx.get(server_url.rstrip("/") + "/_emulator/info", timeout=10)
        r.raise_for_status()
        return r.json()["media"]
    except (httpx.HTTPError, ValueError, KeyError):
        return ""  # not an emulator (a test of an unreachable server): no media origin


@contextlib.contextmanager
def mounted(mountpoint: Path, *, server_url: str, client_id: str, client_secret: str, jwt: str,
            state_dir: Path, extra_args: list[str] = (), log_path: Path | None = None,
            timeout: float = 30.0, background: bool = False,
            media_url: str | None = None) -> Iterator[subprocess.Popen]:
    """Mount the account at `server_url` on `mountpoint` until the block ends.

    `media_url`: the media origin rcfs may send the token to besides the platform's
    (RC_MEDIA_URL); by default the one the emulator at `server_url` serves media on.
    `background`: run the background learner (rcfs.background). Off unless a test asks:
    its probes are extra requests whenever a group is idle, which tests that count the
    requests of a foreground workload would see at random; tests/test_desktop.py runs it.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RC_SERVER_URL=server_url, RC_CLIENT_ID=client_id,
               RC_CLIENT_SECRET=client_secret, RC_JWT=jwt, RC_MEDIA_URL=media_url or emulator_media_url(server_url))
    log_path = log_path or mountpoint.parent / f"{mountpoint.name}.log"
    log_fh = open(log_path, "w")
    cmd = [sys.executable, "-m", "rcfs", "mount", str(mountpoint), "--state-dir", str(state_dir),
           "--debug", *([] if background else ["--no-background"]), *extra_args]
    proc = subprocess.Popen(cmd, env=env, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not _is_mounted(mountpoint):
            if proc.poll() is not None:
                log_fh.flush()
                raise AssertionError(f"rcfs mount exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mount did not appear in {timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        force_unmount(mountpoint)
        stop_process(proc)
        log_fh.close()


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Wait for `proc`; SIGTERM, then SIGKILL, if it does not end by itself."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mount_log(mountpoint: Path) -> str:
    path = mountpoint.parent / f"{mountpoint.name}.log"
    return path.read_text() if path.exists() else ""
