"""Run the `rcfs` command line as a user would: any rcfs binary, any environment.

`fusehelp.mounted` is the everyday mount helper (this venv's rcfs, an explicit
--state-dir); this one takes the whole command, so a test can use another venv's
console script, the default state dir, or `--demo`. Same guarantees: the mount is
waited for with a deadline and always unmounted, the process always waited for.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from fusehelp import _is_mounted, force_unmount, stop_process  # noqa: F401 (stop_process: re-exported)

RCFS = [sys.executable, "-m", "rcfs"]
DEMO_URL_RE = re.compile(r"demo emulator at http://127\.0\.0\.1:(\d+) \(media http://127\.0\.0\.1:(\d+)\)")


def run_rcfs(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0,
             cmd: list[str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`rcfs ARGS` to completion (stdin closed), output captured as text.

    A command that does not end in `timeout` (say, a mount that should have been
    refused) gets SIGTERM first, so it unmounts and stops what it started, and then
    TimeoutExpired is raised.
    """
    argv = [*(cmd or RCFS), *args]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wait_mounted(mountpoint: Path, proc: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _is_mounted(mountpoint):
        if proc.poll() is not None:
            raise AssertionError(f"rcfs exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"mount did not appear in {timeout} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def rcfs_mount(mountpoint: Path, args: list[str], *, env: dict[str, str] | None = None,
               cmd: list[str] | None = None, log_path: Path | None = None,
               timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """`rcfs mount MOUNTPOINT ARGS` in the foreground until the block ends."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_path = log_path or mountpoint.parent / f"{mountpoint.name}.log"
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen([*(cmd or RCFS), "mount", str(mountpoint), *args], env=env, stdout=log_fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_mounted(mountpoint, proc, log_path, timeout)
        yield proc
    finally:
        force_unmount(mountpoint)
        stop_process(proc)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port_closed(port: int, timeout: float = 20.0) -> bool:
    """True once nothing listens on 127.0.0.1:`port` (within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open(port):
            return True
        time.sleep(0.1)
    return False


def listener_pids(port: int) -> list[int]:
    """PIDs listening on the TCP `port` (psmisc's fuser), to clean up after a leak."""
    out = subprocess.run(["fuser", f"{port}/tcp"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def kill_listeners(port: int) -> None:
    """Stop what a broken rcfs left listening on `port` (a test's own emulator)."""
    for pid in listener_pids(port):
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
