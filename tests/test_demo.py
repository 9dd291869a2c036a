"""`rcfs mount --demo` leaves nothing behind: not its emulator, not its temporary state
(tokens included), whichever way it ends: Ctrl-C, SIGTERM, `rcfs umount`, an eject
(`fusermount -u`), and in the background (`--daemon`) too.

TMPDIR points into the test's own directory, so "nothing behind" is checked exactly: no
`rcfs-demo-state-*` is left there, and no one listens on the emulator's ports any more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clihelp import DEMO_URL_RE, RCFS, kill_listeners, port_open, rcfs_mount, run_rcfs, stop_process, \
    wait_port_closed
from fusehelp import FUSERMOUNT, _is_mounted, force_unmount, fuse_required

pytestmark = [fuse_required, pytest.mark.slow]


def demo_env(tmp_path: Path) -> dict[str, str]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "RCFS_EMU_"))}
    env["TMPDIR"] = str(tmpdir)
    return env


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").iterdir())


def demo_ports(log_text: str) -> tuple[int, int]:
    m = DEMO_URL_RE.search(log_text)
    assert m, log_text
    return int(m.group(1)), int(m.group(2))


def end_by(how: str, proc: subprocess.Popen, mp: Path, env: dict[str, str]) -> None:
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    elif how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "rcfs-umount":
        result = run_rcfs(["umount", str(mp)], env=env)
        assert result.returncode == 0, result.stderr
    elif how == "eject":
        # A file manager's eject. "Device or resource busy" can come from any process on
        # this shared machine that happens to be inside the mount for a moment (nothing
        # of rcfs'); like a user, try again, and say what fusermount said if it persists.
        for attempt in range(10):
            result = subprocess.run([FUSERMOUNT, "-u", str(mp)], capture_output=True, text=True, timeout=60)
            if result.returncode == 0 or "busy" not in result.stderr:
                break
            time.sleep(0.5)
        assert result.returncode == 0, result.stderr
    proc.wait(timeout=60)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "rcfs-umount", "eject"])
def test_the_demo_leaves_nothing_behind(tmp_path, how):
    env = demo_env(tmp_path)
    mp = tmp_path / "demo"
    log = tmp_path / "demo.log"
    ports: tuple[int, int] | None = None
    try:
        with rcfs_mount(mp, ["--demo", "--debug"], env=env, log_path=log) as proc:
            ports = demo_ports(log.read_text())
            assert os.listdir(mp / "faxes")
            [state] = [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("rcfs-demo-state-")]
            assert list(state.glob("*/tokens.json")), "the demo keeps its session here while it runs"
            end_by(how, proc, mp, env)
            assert proc.returncode == 0, log.read_text()[-3000:]
        assert not _is_mounted(mp)
        assert leftovers(tmp_path) == [], log.read_text()[-3000:]
        for port in ports:
            assert wait_port_closed(port), f"the demo emulator still listens on {port}"
    finally:
        for port in ports or ():
            if port_open(port):
                kill_listeners(port)


def test_the_demo_daemon_stops_its_emulator(tmp_path):
    """--daemon forks after the demo emulator was started: the daemon, not being its
    parent, saw Popen.poll() fail with ECHILD, took the emulator for dead and left it
    running when unmounted."""
    env = demo_env(tmp_path)
    mp = tmp_path / "demo"
    mp.mkdir()
    out = tmp_path / "daemon.out"
    log_file = tmp_path / "daemon.log"
    ports: tuple[int, int] | None = None
    pid = None
    try:
        with open(out, "w") as fh:
            # Output to a file, not a pipe: a leaked child holding the pipe would hang run().
            starter = subprocess.run([*RCFS, "mount", "--demo", "--daemon", str(mp), "--log-file", str(log_file)],
                                     env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     timeout=120)
        text = out.read_text()
        assert starter.returncode == 0, text + log_file.read_text()
        assert _is_mounted(mp)
        ports = demo_ports(text)
        pid = int(os.getxattr(mp, "user.rc.pid"))
        assert all(port_open(p) for p in ports)
        assert os.listdir(mp / "faxes")
        result = run_rcfs(["umount", str(mp)], env=env)
        assert result.returncode == 0, result.stderr
        for port in ports:
            assert wait_port_closed(port), f"the daemon left its emulator listening on {port}"
        assert leftovers(tmp_path) == []
        assert "Traceback" not in log_file.read_text()
    finally:
        force_unmount(mp)
        if pid is not None:
            deadline = time.monotonic() + 20
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.1)
        for port in ports or ():
            if port_open(port):
                kill_listeners(port)


def test_an_interrupted_demo_start_leaves_nothing_behind(tmp_path):
    """SIGTERM while the emulator is still starting (before the mount loop runs)."""
    env = demo_env(tmp_path)
    mp = tmp_path / "demo"
    mp.mkdir()
    log = tmp_path / "demo.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*RCFS, "mount", "--demo", str(mp), "--demo-scale", "listing"], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    children: list[int] = []
    try:
        # The state dir appears first, then the emulator; the big "listing" account takes
        # a while to seed, so the signal lands while rcfs waits for it.
        deadline = time.monotonic() + 30
        while not (any((tmp_path / "tmp").iterdir()) and child_pids(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _is_mounted(mp)
        children = child_pids(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert leftovers(tmp_path) == [], log.read_text()
        assert "Traceback" not in log.read_text()
        for pid in children:
            assert wait_gone(pid), f"the demo emulator (pid {pid}) outlived rcfs"
    finally:
        force_unmount(mp)
        stop_process(proc)
        for pid in children:
            if not wait_gone(pid, timeout=0):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("when", ["as the log says it unmounts", "once unmounted, stopping its emulator"])
def test_a_second_sigterm_while_stopping_is_quiet_and_leaves_nothing_behind(tmp_path, when):
    """A service manager's (or an impatient user's) second SIGTERM, sent once the first
    has begun the shutdown. The emulator is kept from stopping (SIGSTOP) so that rcfs is
    still stopping when the second one comes, wherever it lands. It used to raise
    KeyboardInterrupt there: inside the unmount (the mount was left behind) or inside the
    wait for the emulator (a traceback, and `rcfs-demo-state-*`, tokens included, left in
    TMPDIR). Now it is quiet and hurries the end: the emulator is killed, not waited for."""
    env = demo_env(tmp_path)
    mp = tmp_path / "demo"
    log = tmp_path / "demo.log"
    children: list[int] = []
    with rcfs_mount(mp, ["--demo", "-v"], env=env, log_path=log) as proc:
        children = child_pids(proc.pid)
        assert len(children) == 1, children
        try:
            os.kill(children[0], signal.SIGSTOP)
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "received SIGTERM: unmounting" in log.read_text(), "the shutdown to begin")
            if when != "as the log says it unmounts":
                wait_for(lambda: not _is_mounted(mp), "the unmount")
            assert proc.poll() is None  # still stopping: the emulator cannot end
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            for pid in children:
                if not wait_gone(pid, timeout=0):
                    os.kill(pid, signal.SIGCONT)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert "stopping the demo emulator at once" in text, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
    assert not _is_mounted(mp)
    assert leftovers(tmp_path) == [], text[-3000:]
    assert wait_gone(children[0]), f"the demo emulator (pid {children[0]}) outlived rcfs"


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def child_pids(pid: int) -> list[int]:
    """The emulator rcfs started (its children that run rcfs.emulator)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"rcfs.emulator" in cmdline:
                found.append(int(child))
    return found


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    """True once `pid` no longer runs (gone or a zombie)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
