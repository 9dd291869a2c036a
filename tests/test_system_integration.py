"""rcfs as a citizen of the system: mount(8) and /etc/fstab, the systemd user unit, sd_notify.

The fstab test uses a real `mount --fstab FILE` / `umount` with nothing installed system
wide: the line names the helper by absolute path in mount.fuse3's `PROGRAM#SOURCE` form
(type `fuse`), which is what mount(8) runs through /sbin/mount.fuse3 (mount(8) clears
PATH for helpers, so `fuse.rcfs` needs `rcfs` in /usr/local/bin or /usr/bin, or the
`mount.fuse.rcfs` script linked into /sbin; the helper code behind both is the same).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fusehelp import force_unmount, fuse_required

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "rcfs" / "data" / "rcfs.service"
RCFS_BIN = Path(sys.executable).parent / "rcfs"
HELPER_BIN = Path(sys.executable).parent / "mount.fuse.rcfs"


def _mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def _mount_options(path: Path) -> set[str]:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if fields[1] == target:
                return set(fields[3].split(","))
    return set()


def _write_config(path: Path, srv) -> Path:
    path.write_text(f'server_url = "{srv.platform}"\nclient_id = "{srv.client_id}"\n'
                    f'client_secret = "{srv.client_secret}"\njwt = "{srv.jwt}"\nmedia_url = "{srv.media}"\n')
    path.chmod(0o600)
    return path


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _kill_if_alive(pid: int | None) -> None:
    if pid and not _wait_gone(pid, 0.1):
        os.kill(pid, signal.SIGKILL)


needs_root_mount = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("mount") or not os.path.exists("/sbin/mount.fuse3"),
    reason="needs root, mount(8) and mount.fuse3 (apt-get install fuse3)")


@fuse_required
@needs_root_mount
@pytest.mark.parametrize("how", ["fstab", "mount -t fuse", "as /sbin/mount.fuse.rcfs"])
def test_mount8_with_fstab_line_honours_uid_gid_allow_other_and_umount_stops_it(start_emulator, tmp_path, how):
    srv = start_emulator(window=1.0)
    config = _write_config(tmp_path / "config.toml", srv)
    # Other users must be able to reach the mountpoint (pytest's tmp dirs are 0700).
    public = Path(tempfile.mkdtemp(prefix="rcfs-fstab-"))
    public.chmod(0o755)
    mp = public / "rc"
    mp.mkdir()
    options = f"allow_other,uid=12345,gid=12346,_netdev,nofail,config={config},state_dir={tmp_path / 'state'}"
    source = f"{RCFS_BIN}#none"
    if how == "fstab":
        fstab = tmp_path / "fstab"
        fstab.write_text(f"# test\n{source} {mp} fuse {options} 0 0\n")
        cmd = ["mount", "--fstab", str(fstab), str(mp)]
    elif how == "mount -t fuse":
        cmd = ["mount", "-t", "fuse", "-o", options, source, str(mp)]
    else:
        # What mount(8) runs for `-t fuse.rcfs` once the helper is linked into /sbin
        # (not done here: nothing is installed system wide).
        cmd = [str(HELPER_BIN), "none", str(mp), "-o", "rw," + options]
    # Credentials in the environment must not be used: only the config file counts.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
    env["RC_JWT"] = "not-the-jwt"
    pid = None
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
        assert result.returncode == 0, result.stderr
        assert _mounted(mp)  # mount(8) returned only once mounted
        pid = int(os.getxattr(mp, "user.rc.pid"))
        assert "allow_other" in _mount_options(mp)
        faxes = mp / "faxes"
        st = faxes.stat()
        assert (st.st_uid, st.st_gid) == (12345, 12346)
        first = sorted(faxes.iterdir())[0]
        assert (first.stat().st_uid, first.stat().st_gid) == (12345, 12346)
        assert len(first.read_bytes()) == first.stat().st_size > 0
        if shutil.which("setpriv"):
            # allow_other lets other users in; the kernel checks the presented owner
            # (default_permissions, mode 0400): uid 12345 reads, anyone else may not.
            def cat_as(uid: int) -> subprocess.CompletedProcess:
                return subprocess.run(["setpriv", f"--reuid={uid}", "--regid=12346", "--clear-groups",
                                       "cat", str(first)], capture_output=True, timeout=60)
            assert cat_as(12345).stdout == first.read_bytes()
            denied = cat_as(12347)
            assert denied.returncode != 0 and b"Permission denied" in denied.stderr
        result = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert not _mounted(mp)
        assert _wait_gone(pid), "the rcfs process kept running after umount"
    finally:
        force_unmount(mp)
        _kill_if_alive(pid)
        shutil.rmtree(public, ignore_errors=True)


@pytest.mark.parametrize("option", ["jwt=abc", "client_secret=s3cret", "jwt_file=/tmp/x"])
def test_credentials_on_the_mount_line_are_refused(tmp_path, option):
    mp = tmp_path / "rc"
    mp.mkdir()
    result = subprocess.run([str(HELPER_BIN), "none", str(mp), "-o", f"allow_other,{option}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "config file" in result.stderr and option.split("=")[1] not in result.stderr
    assert not _mounted(mp)


def test_a_mistyped_subcommand_is_not_taken_for_a_mount(tmp_path):
    mp = tmp_path / "rc"
    mp.mkdir()
    result = subprocess.run([str(RCFS_BIN), "mout", str(mp)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert not _mounted(mp)


def test_helper_translates_mount_options():
    from rcfs.mounthelper import HelperError, parse

    mountpoint, args = parse(["none", "/srv/rc", "-o", "rw,allow_other,uid=0,gid=0,_netdev,noatime,x-gvfs-show,"
                              "config=/etc/rcfs/a.toml,ro", "-t", "fuse.rcfs"])
    assert mountpoint == "/srv/rc"
    assert args[:3] == ["mount", "/srv/rc", "--daemon"]
    assert "--allow-other" in args and "--read-only" in args
    assert args[args.index("--uid") + 1] == "0" and args[args.index("--gid") + 1] == "0"
    assert args[args.index("--config") + 1] == "/etc/rcfs/a.toml"
    _, args = parse(["none", "/srv/rc", "-o", "outbox_settle=10"])
    assert args[args.index("--outbox-settle") + 1] == "10"
    with pytest.raises(HelperError, match="unknown option"):
        parse(["none", "/srv/rc", "-o", "frobnicate"])
    with pytest.raises(HelperError, match="usage"):
        parse(["/srv/rc"])


# systemd ---------------------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_user_unit_passes_systemd_analyze_verify(tmp_path):
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    result = subprocess.run(["systemd-analyze", "--user", "verify", str(UNIT)], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either
    text = UNIT.read_text()
    assert "Type=notify" in text and "Restart=on-failure" in text
    # The check can fail: a broken unit is refused.
    bad = tmp_path / "bad.service"
    bad.write_text(text.replace("ExecStart=/usr/bin/env", "ExecStart=/nonexistent/env"))
    assert subprocess.run(["systemd-analyze", "--user", "verify", str(bad)], capture_output=True,
                          timeout=120, env=env, cwd=tmp_path).returncode != 0


@fuse_required
def test_readiness_is_notified_only_once_serving_and_sigterm_unmounts(start_emulator, tmp_path):
    """What systemd sees of a Type=notify rcfs: READY=1 arrives when the mount already
    answers; SIGTERM (systemctl stop) gives STOPPING=1, an unmount and exit status 0."""
    srv = start_emulator(window=1.0)
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    mp = tmp_path / "rc"
    mp.mkdir()
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), RC_SERVER_URL=srv.platform, RC_CLIENT_ID=srv.client_id,
               RC_CLIENT_SECRET=srv.client_secret, RC_JWT=srv.jwt, RC_MEDIA_URL=srv.media)
    log = open(tmp_path / "rcfs.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "rcfs", "mount", str(mp), "--state-dir", str(tmp_path / "s")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        message = sock.recv(4096).decode()
        assert message.startswith("READY=1"), message
        # Ready means serving: the first look into the mount is answered.
        assert _mounted(mp) and "faxes" in os.listdir(mp)
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode() == "STOPPING=1"
        assert proc.wait(timeout=60) == 0
        assert not _mounted(mp)
    finally:
        sock.close()
        force_unmount(mp)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _user_manager_running() -> bool:
    if not shutil.which("systemctl"):
        return False
    try:
        state = subprocess.run(["systemctl", "--user", "is-system-running"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return state in ("running", "degraded")


@fuse_required
@pytest.mark.skipif(not _user_manager_running(), reason="needs a running systemd user manager")
def test_user_unit_for_real(start_emulator, tmp_path):
    """The shipped unit under a real user manager: `start` returns once mounted (Type=notify),
    `stop` unmounts. Only the mountpoint, the program path and the credentials differ."""
    srv = start_emulator(window=1.0)
    config = _write_config(tmp_path / "config.toml", srv)
    mp = tmp_path / "rc"
    name = f"rcfs-test-{os.getpid()}.service"
    unit_dir = Path.home() / ".config" / "systemd" / "user"
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / name
    text = UNIT.read_text().replace("%h/RingCentral", str(mp))
    text = text.replace("ExecStart=/usr/bin/env rcfs mount",
                        f"ExecStart={RCFS_BIN} mount --config {config} --state-dir {tmp_path / 'state'}")
    assert str(RCFS_BIN) in text and str(mp) in text
    unit.write_text(text)

    def systemctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=120)

    try:
        assert systemctl("daemon-reload").returncode == 0
        started = systemctl("start", name)
        assert started.returncode == 0, started.stderr
        assert _mounted(mp) and "faxes" in os.listdir(mp)  # ready meant serving
        assert systemctl("stop", name).returncode == 0
        assert not _mounted(mp)
        assert systemctl("is-failed", name).stdout.strip() in ("inactive", "unknown")
    finally:
        systemctl("stop", name)
        unit.unlink(missing_ok=True)
        systemctl("daemon-reload")
        force_unmount(mp)
