"""`rcfs` command line: mount, umount, emulator."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from . import settings
from .settings import SettingsError

log = logging.getLogger("rcfs")

EPILOG_MOUNT = """\
credentials (never on the command line):
  environment  RC_SERVER_URL, RC_CLIENT_ID, RC_CLIENT_SECRET, RC_JWT
               (RC_MEDIA_URL: the media host, where it is not the platform's
               platform. -> media. twin; the token goes to these origins only)
  config file  ~/.config/rcfs/config.toml with keys server_url, client_id,
               client_secret, jwt (or jwt_file), media_url; keep it chmod 600

what you get:
  /faxes /voicemail /recordings /mms  read-only media, named
        YYYY-MM-DD_HH-MM-SS_{from|to}_NUMBER_ID.ext (sorts by time)
  getfattr -d FILE                      message metadata (user.rc.*)

examples:
  rcfs mount --demo ~/rc          demo account from the built-in emulator
  rcfs mount ~/rc                 your account (credentials from env/config)
  rcfs umount ~/rc
"""


def _setup_logging(verbose: int, debug: bool, log_file: str | os.PathLike[str] | None) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler: logging.Handler = logging.StreamHandler(_open_log_file(log_file)) if log_file \
        else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not debug:
        # httpx logs every request at INFO; that is debug detail for us.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)


def _open_log_file(path: str | os.PathLike[str]):
    """Append to `path`, creating it 0600: a log names the account's numbers and files."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SettingsError(f"--log-file: cannot open {path}: {exc.strerror}") from None
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rcfs")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


# What `pip install rcfs[emulator]` adds (distribution names, as in pyproject.toml).
EMULATOR_DISTRIBUTIONS = ("hypercorn", "starlette", "python-multipart", "Pillow")


def missing_emulator_packages() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for name in EMULATOR_DISTRIBUTIONS:
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    return missing


def _require_emulator(what: str) -> None:
    missing = missing_emulator_packages()
    if missing:
        raise SettingsError(
            f"{what} needs rcfs's RingCentral API emulator, which is not installed (missing: "
            f"{', '.join(missing)}). Install it with:  pip install 'rcfs[emulator]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcfs", description="Mount a RingCentral account as a filesystem.")
    parser.add_argument("--version", action="version", version=f"rcfs {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser("mount", help="mount an account (or the demo account)",
                       description="Mount a RingCentral account on MOUNTPOINT. Runs in the "
                                   "foreground until unmounted or Ctrl-C, unless --daemon.",
                       epilog=EPILOG_MOUNT, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("mountpoint", type=Path, help="an empty directory")
    m.add_argument("--demo", action="store_true",
                   help="start the built-in emulator with a seeded demo account and mount that "
                        "(needs rcfs[emulator]); Ctrl-C unmounts, stops the emulator and removes "
                        "the demo's temporary state")
    m.add_argument("--demo-scale", default="demo", choices=["demo", "listing", "bench", "company"],
                   help="size of the demo account (default: demo)")
    m.add_argument("--demo-user", action="store_true",
                   help="sign in to the demo as a regular user (extension 102) instead of the super "
                        "admin: no /company, and exports are refused")
    m.add_argument("--demo-window", type=float, default=10.0,
                   help="the demo emulator's rate-limit window in seconds (real API: 60); the "
                        "demo runs 6x faster so copying the whole account takes seconds (default: 10)")
    m.add_argument("--server-url", help="API server (default: $RC_SERVER_URL or %s)" % settings.DEFAULT_SERVER)
    m.add_argument("--client-id", help="app client id (default: $RC_CLIENT_ID or config file)")
    m.add_argument("--config", type=Path, help="config file (default: %s)" % settings.default_config_file())
    m.add_argument("--since", help="show messages and calls from this date on (2026-01-31, or 90d); "
                                   "default: the whole history")
    m.add_argument("--listing-ttl", type=float, default=30.0, metavar="SECONDS",
                   help="how long a message folder listing is trusted before the next look "
                        "asks for changes (one message-sync request) (default: 30)")
    m.add_argument("--recordings-ttl", type=float, default=300.0, metavar="SECONDS",
                   help="the same for /recordings, re-listed from the call log (Heavy group) (default: 300)")
    m.add_argument("--listing-wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long an ls waits for a listing (a rate-limited API can take minutes) "
                        "before showing the previous one; a first listing that is not in by then "
                        "fails with EAGAIN and goes on in the background (default: 60)")
    m.add_argument("--outbox-settle", type=float, default=5.0, metavar="SECONDS",
                   help="a file written into /outbox is sent once it has been closed and left "
                        "alone (not reopened, written, truncated or renamed) this long, so a "
                        "program's temporary file renamed at once goes out under its final "
                        "name, or not at all; it is on disk from its close on (default: 5). "
                        "Temporary names (sedXXXXXX, tmp.XXXXXXXXXX, .NAME.XXXXXX, NAME~, "
                        "*.tmp, ...) are never sent under that name: rename them")
    m.add_argument("--cache-size", default="256M", help="memory for the block cache (default: 256M)")
    m.add_argument("--block-size", default="1M", help="cache block size (default: 1M)")
    m.add_argument("--read-ahead", default="1024", metavar="KB",
                   help="kernel read-ahead for this mount in KiB when running as root "
                        "(bigger FUSE reads, faster sequential reads; 0 keeps the kernel default; "
                        "default: 1024)")
    m.add_argument("--direct-io-above", default="256M", metavar="SIZE",
                   help="files of at least SIZE bypass the kernel page cache (direct I/O): a "
                        "multi-GB recording streams at full speed without pushing everything "
                        "else out of memory; rcfs's block cache still serves re-reads. Shared "
                        "mmap() of such files fails with ENODEV (private mmap works). 'off' "
                        "keeps every file in the page cache (default: 256M)")
    m.add_argument("--state-dir", type=Path,
                   help="token store and learned sizes: a private directory (refused if other users "
                        "can write to it); default: %s, or a temporary one removed at exit for "
                        "--demo" % settings.default_state_dir())
    m.add_argument("--read-only", action="store_true", help="mount read-only (ro)")
    m.add_argument("-o", dest="fuse_opts", action="append", default=[], metavar="OPT",
                   help="FUSE option; supported: allow_other, ro")
    m.add_argument("--allow-other", action="store_true",
                   help="let other users see the mount (needs user_allow_other in /etc/fuse.conf "
                        "unless root); default: private to you")
    m.add_argument("--nonempty", action="store_true", help="allow mounting over a non-empty directory")
    m.add_argument("--daemon", action="store_true", help="go to the background once mounted")
    m.add_argument("--uid", type=int, help="owner the files are shown with (default: you)")
    m.add_argument("--gid", type=int, help="group the files are shown with (default: your group)")
    m.add_argument("--no-company", dest="company", action="store_false",
                   help="no /company even for an admin (the whole account is not walked by "
                        "desktop indexers or a `cp -r` of the mount; saves the one request that "
                        "asks what the user may see)")
    m.add_argument("--no-background", dest="background", action="store_false",
                   help="do not learn unknown sizes and recording types while the API is idle "
                        "(they are then learned only when a file is opened)")
    m.add_argument("--no-push", dest="push", action="store_false",
                   help="no push notifications: do not keep a WebSocket to RingCentral's gateway; "
                        "listings are then re-checked on look after --listing-ttl / --recordings-ttl "
                        "(default: push on; while it is up, an idle mount sends no request)")
    m.add_argument("--shared-budget", metavar="URL",
                   help="share one rate-limit budget and one login with every other mount of this "
                        "account through Redis: redis://HOST:PORT/DB, rediss://... (TLS) or "
                        "unix:///path/redis.sock (also: shared_budget in the config file). The "
                        "password comes from the config file (shared_budget_password) or "
                        "RCFS_REDIS_PASSWORD, never from here. Default: this mount paces alone")
    m.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (INFO)")
    m.add_argument("--debug", action="store_true", help="log everything (DEBUG)")
    m.add_argument("--log-file", help="log to this file instead of stderr (created mode 0600)")

    u = sub.add_parser("umount", help="unmount and wait until the filesystem process has gone",
                       description="Unmount MOUNTPOINT and wait until the rcfs process has exited. "
                                   "Also clears a stale mount left by a crash.")
    u.add_argument("mountpoint", type=Path)
    u.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default: 30)")

    st = sub.add_parser("status", help="what a running mount is doing (rate limits, cache, downloads)",
                        description="Show, for the rcfs mount at MOUNTPOINT: per rate-limit group the "
                                    "budget left, requests and 429s so far; the block cache's use and hit "
                                    "rate; bytes fetched; downloads in flight with their progress; "
                                    "background work pending; the outbox queue. Costs no API request.")
    st.add_argument("mountpoint", type=Path)
    st.add_argument("--watch", nargs="?", type=float, const=1.0, metavar="SECONDS",
                    help="redraw every SECONDS (default 1) until Ctrl-C: the progress view of a long cp")
    st.add_argument("--json", action="store_true", help="print the raw report")

    sub.add_parser("emulator", help="run the RingCentral API emulator (see rcfs emulator --help)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        try:
            _require_emulator("the emulator command")
        except SettingsError as exc:
            print(f"rcfs: {exc}", file=sys.stderr)
            return 2
        from .emulator.server import main as emulator_main
        return emulator_main(argv[1:]) or 0
    if _called_by_mount(argv):
        from .mounthelper import main as helper_main
        return helper_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "umount":
            return cmd_umount(args.mountpoint, args.timeout)
        if args.command == "status":
            from .status import cmd_status
            return cmd_status(str(args.mountpoint), watch=args.watch, as_json=args.json)
    except (SettingsError,) as exc:
        print(f"rcfs: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 2


def _called_by_mount(argv: list[str]) -> bool:
    """mount.fuse3 runs `rcfs SOURCE MOUNTPOINT -o OPTIONS` for type fuse.rcfs: a first
    argument that is no subcommand, then a directory, then -o (mount(8) always passes at
    least `-o rw`), so a mistyped subcommand is never taken for a mount."""
    commands = {"mount", "umount", "status", "emulator"}
    return (len(argv) >= 4 and argv[0] not in commands and not argv[0].startswith("-")
            and not argv[1].startswith("-") and argv[2] == "-o")


# mount ------------------------------------------------------------------------------------

class _Shutdown:
    """Whether `rcfs mount` is stopping, and what a further signal may hurry meanwhile."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stopping = False
        self.hurry: Callable[[], None] | None = None

    def begin(self) -> None:
        self.stopping = True

    def again(self, signum: int) -> None:
        """A signal while stopping: the demo emulator is killed rather than waited for."""
        hurry, self.hurry = self.hurry, None
        if hurry is not None:
            log.warning("received %s while stopping: stopping the demo emulator at once",
                        signal.Signals(signum).name)
            hurry()


_SHUTDOWN = _Shutdown()


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP outside the mount loop (which watches them itself) unwind like Ctrl-C,
    so the cleanup in `cmd_mount` runs. Inside `trio.run` the SIGINT handler is trio's,
    which delivers the KeyboardInterrupt at a safe point.

    Once rcfs is stopping, a signal raises nothing (a second SIGTERM from a service
    manager or an impatient user used to interrupt the cleanup with a traceback and leave
    the demo's state, tokens included, behind): it hurries what may be hurried, the demo
    emulator being killed instead of waited for."""
    if _SHUTDOWN.stopping:
        _SHUTDOWN.again(signum)
        return
    _SHUTDOWN.begin()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _stop_like_ctrl_c:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def cmd_mount(args: argparse.Namespace) -> int:
    """Exit status: 0 after a clean unmount, 1 when mounting failed, 2 for bad options."""
    import tempfile

    import trio

    from .mount import MountError, MountOptions, check_mountpoint, run_mount, start_demo_emulator

    # Every option is checked before anything starts (SettingsError: exit 2).
    cache_bytes = settings.parse_size(args.cache_size, "--cache-size")
    block_size = settings.parse_size(args.block_size, "--block-size")
    read_ahead_kb = settings.parse_read_ahead(args.read_ahead)
    settings.check_sizes(cache_bytes=cache_bytes, block_size=block_size, read_ahead_kb=read_ahead_kb)
    direct_io_above = settings.parse_size_or_off(args.direct_io_above, "--direct-io-above")
    since = settings.parse_since(args.since)
    outbox_settle = _not_negative(args.outbox_settle, "--outbox-settle")
    unknown = [o for o in ",".join(args.fuse_opts).split(",") if o and o not in ("allow_other", "ro")]
    if unknown:
        raise SettingsError(f"unsupported -o option(s): {', '.join(unknown)} (supported: allow_other, ro)")
    opts_o = set(",".join(args.fuse_opts).split(","))
    if args.demo:
        _require_emulator("the demo (--demo)")
    _setup_logging(args.verbose, args.debug, args.log_file)
    mountpoint = args.mountpoint.expanduser().absolute()
    try:
        check_mountpoint(mountpoint, nonempty=args.nonempty)
    except MountError as exc:
        print(f"rcfs: {exc}", file=sys.stderr)
        return 1

    if args.state_dir is not None:
        state_dir = settings.prepare_state_dir(args.state_dir, explicit=True)
    elif not args.demo:
        state_dir = settings.default_state_dir()
        settings.migrate_state_dir(state_dir, settings.legacy_state_dir())
        state_dir = settings.prepare_state_dir(state_dir, explicit=False)
    creds = None
    if not args.demo:
        creds = settings.resolve_credentials(server_url=args.server_url, client_id=args.client_id,
                                             config_path=args.config)
    shared_url, shared_password = None, None
    if args.shared_budget or not args.demo:  # (the demo does not read your account's config)
        shared_url, shared_password = settings.resolve_shared_budget(flag=args.shared_budget,
                                                                     config_path=args.config)

    # From here on every exit path (an error, Ctrl-C, SIGTERM, an unmount) goes through
    # the `finally` below, which stops the demo emulator and removes the demo's state.
    _SHUTDOWN.reset()
    previous_handlers = {sig: signal.signal(sig, _stop_like_ctrl_c) for sig in (signal.SIGTERM, signal.SIGHUP)}
    demo = None
    demo_state: Path | None = None
    ready_fd: int | None = None
    try:
        if args.demo and args.state_dir is None:
            # A fresh emulator has fresh tokens: never reuse a previous demo's.
            demo_state = state_dir = Path(tempfile.mkdtemp(prefix="rcfs-demo-state-"))
        log_file = args.log_file
        if args.daemon and not log_file:
            # A daemon has no terminal: keep its log next to its state.
            log_file = state_dir / "rcfs.log"
            _setup_logging(args.verbose, args.debug, log_file)
            print(f"rcfs: logging to {log_file}", file=sys.stderr)
        if args.daemon:
            # Fork before starting the demo emulator: the process that serves the mount
            # must be the emulator's parent, or it can neither wait for it nor stop it.
            ready_fd = _daemonize()
        if args.demo:
            from .api.client import Credentials
            from .emulator.config import EmulatorConfig

            emulator_stderr = open(log_file, "a") if args.daemon else None
            try:
                demo = start_demo_emulator(["--scale", args.demo_scale, "--window", str(args.demo_window)],
                                           stderr=emulator_stderr)
            finally:
                if emulator_stderr is not None:
                    emulator_stderr.close()
            _SHUTDOWN.hurry = demo.kill
            cfg = EmulatorConfig()
            creds = Credentials(server_url=demo.platform_url, client_id=cfg.client_id,
                                client_secret=cfg.client_secret, jwt=cfg.user_jwt if args.demo_user else cfg.jwt,
                                media_url=demo.media_url)
            print(f"rcfs: demo emulator at {demo.platform_url} (media {demo.media_url})", file=sys.stderr)
        assert creds is not None
        options = MountOptions(
            mountpoint=mountpoint, credentials=creds, state_dir=state_dir, since=since,
            cache_bytes=cache_bytes, block_size=block_size,
            allow_other=args.allow_other or "allow_other" in opts_o,
            read_only=args.read_only or "ro" in opts_o,
            nonempty=args.nonempty, read_ahead_kb=read_ahead_kb, direct_io_above=direct_io_above,
            message_ttl=args.listing_ttl, recording_ttl=args.recordings_ttl,
            listing_wait=_positive(args.listing_wait, "--listing-wait"),
            outbox_settle=outbox_settle,
            uid=args.uid,
            gid=args.gid,
            background=args.background,
            push=args.push,
            company=args.company,
            shared_budget=shared_url,
            shared_budget_password=shared_password,
        )

        def ready() -> None:
            nonlocal ready_fd
            print(f"rcfs: mounted on {mountpoint} (Ctrl-C or `rcfs umount {mountpoint}` to stop)",
                  file=sys.stderr, flush=True)
            if ready_fd is not None:
                os.write(ready_fd, b"ok\n")
                os.close(ready_fd)
                ready_fd = None
                _detach_stdio()

        try:
            trio.run(run_mount, options, ready, _SHUTDOWN.begin, _SHUTDOWN.again)
        except KeyboardInterrupt:
            pass
        return 0
    except (MountError, SettingsError) as exc:
        if ready_fd is not None:
            os.write(ready_fd, f"{exc}\n".encode())  # the waiting parent prints it
        else:
            print(f"rcfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the mount loop ran
        return 0 if ready_fd is None else 1
    finally:
        # Stopping: from here on no signal raises (Ctrl-C included), so the emulator is
        # always stopped and the demo's state always removed.
        _SHUTDOWN.begin()
        previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, _stop_like_ctrl_c)
        try:
            if demo is not None:
                log.info("stopping the demo emulator (pid %d)", demo.process.pid)
                demo.stop()
        finally:
            if demo_state is not None:
                shutil.rmtree(demo_state, ignore_errors=True)
            _SHUTDOWN.hurry = None
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise SettingsError(f"{flag}: expected a number of seconds above 0, got {value}")
    return value


def _not_negative(value: float, flag: str) -> float:
    if not 0 <= value <= 24 * 3600:
        raise SettingsError(f"{flag}: expected a number of seconds from 0 to 86400, got {value}")
    return value


def _daemonize() -> int:
    """Fork; the parent waits until the child reports "mounted" (or an error) and exits."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        with os.fdopen(read_fd) as fh:
            message = fh.readline().strip()
        if message == "ok":
            os._exit(0)
        print(f"rcfs: {message or 'the filesystem process exited before mounting'}", file=sys.stderr)
        os._exit(1)
    os.close(read_fd)
    os.setsid()
    return write_fd


def _detach_stdio() -> None:
    """A daemon keeps no terminal (or pipe) open: its log goes to the log file."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


# umount -------------------------------------------------------------------------------

def cmd_umount(mountpoint: Path, timeout: float) -> int:
    path = str(mountpoint.expanduser().absolute())
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    from .mount import is_stale

    if is_stale(path):
        # A crashed filesystem: nothing to wait for, just detach it.
        subprocess.run([tool, "-u", "-z", path] if tool else ["umount", "-l", path], check=False)
        print(f"rcfs: cleared stale mount {path}", file=sys.stderr)
        return 0
    if not os.path.isdir(path):
        print(f"rcfs: {path} is not a directory", file=sys.stderr)
        return 1
    try:
        pid = int(os.getxattr(path, "user.rc.pid"))
    except OSError:
        print(f"rcfs: {path} is not an rcfs mount", file=sys.stderr)
        return 1
    try:
        waiting = int(os.getxattr(path, "user.rc.outbox_waiting"))
    except (OSError, ValueError):
        waiting = 0
    cmd = [tool, "-u", path] if tool else ["umount", path]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"rcfs: unmount failed: {result.stderr.strip()} (files still open? try: fuser -vm {path})",
              file=sys.stderr)
        return 1
    if waiting:
        print(f"rcfs: {waiting} item(s) waiting in the outbox; they stay in the spool and are sent "
              "at the next mount", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return 0
        time.sleep(0.05)
    print(f"rcfs: unmounted, but process {pid} is still running after {timeout:.0f} s", file=sys.stderr)
    return 1


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
