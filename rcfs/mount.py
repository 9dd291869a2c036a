"""Mount lifecycle: check the mountpoint, log in, mount, serve, unmount.

Shape borrowed from s3ql's mount: one trio nursery owns the reader's background tasks,
the signal watcher and the folder owners' background work; SIGINT/SIGTERM end the pyfuse3 loop;
a clean end unmounts. After an unexpected crash the mountpoint is deliberately left
mounted-but-dead (reads fail loudly) rather than silently empty, because a mirroring job
(`rsync --delete` from the mount) would otherwise delete its copy; `rcfs umount` clears it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import errno
import functools
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Callable

import pyfuse3
import trio

from .api.auth import TokenStore
from .api.client import Credentials, RingCentralClient
from .api.errors import ApiError, AuthError
from .api.shared_budget import SharedBudget, scope_of
from .exports_model import ExportManager
from .folders.base import FolderOwner
from .folders.company import CompanyRecordingsOwner, CompanyUsersOwner
from .folders.exports import ExportsOwner
from .folders.greetings import GreetingsOwner
from .folders.media import RemoteMediaOwner
from .folders.outbox import OutboxOwner
from .folders.texts import TextsOwner
from . import status as status_report
from .push import PushChannel
from . import systemd
from .background import BackgroundLearner
from .fs import Operations, reader_priority
from .greetings_model import GreetingsModel
from .mailbox import Mailbox
from .reader import Reader
from .sender import Sender
from .spool import Spool
from .state import StateStore
from .tree import Tree

log = logging.getLogger(__name__)


class MountError(Exception):
    """Mounting cannot go ahead; the message tells the user what to do."""


@dataclasses.dataclass
class MountOptions:
    mountpoint: Path
    credentials: Credentials
    state_dir: Path
    since: dt.datetime
    cache_bytes: int = 256 << 20
    block_size: int = 1 << 20
    allow_other: bool = False
    read_only: bool = False
    message_ttl: float = 30.0
    recording_ttl: float = 300.0
    listing_wait: float = 60.0  # seconds an ls waits for a listing (rcfs.folders.media)
    outbox_settle: float = 5.0  # seconds an outbox item stays closed and untouched before it is sent
    nonempty: bool = False
    read_ahead_kb: int = 1024
    direct_io_above: int | None = 256 << 20  # None: always through the page cache
    uid: int | None = None  # owner the tree presents (None: the mounting user); mount -o uid=
    gid: int | None = None
    background: bool = True  # learn unknown sizes and recording types while the API is idle
    push: bool = True  # events over RingCentral's WebSocket gateway (rcfs.push)
    company: bool = True  # /company for admins (rcfs.folders.company); False: never asked
    shared_budget: str | None = None  # a fleet's Redis URL (issue 18; rcfs.api.shared_budget)
    shared_budget_password: str | None = dataclasses.field(default=None, repr=False)


def check_mountpoint(path: Path, *, nonempty: bool = False) -> None:
    """Refuse stale, missing, non-directory and (unless asked) non-empty mountpoints."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"{path} is a stale mount left by a crashed filesystem (Transport endpoint is not "
                f"connected). Clear it with: rcfs umount {path}   (or: fusermount3 -u -z {path})") from None
        if exc.errno == errno.ENOENT:
            raise MountError(f"mountpoint {path} does not exist; create it with: mkdir -p {path}") from None
        raise MountError(f"cannot use mountpoint {path}: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if _is_fuse_mount(path):
        if is_stale(path):
            raise MountError(
                f"{path} is a stale mount left by a crashed filesystem (Transport endpoint is not "
                f"connected). Clear it with: rcfs umount {path}   (or: fusermount3 -u -z {path})")
        raise MountError(f"{path} is already a FUSE mount; unmount it first: rcfs umount {path}")
    if not nonempty and any(os.scandir(path)):
        raise MountError(f"mountpoint {path} is not empty; rcfs would hide its files. "
                         "Use an empty directory (or --nonempty if you really mean it)")


def is_stale(path: Path | str) -> bool:
    """True when `path` is a FUSE mount whose process is gone (ENOTCONN)."""
    try:
        os.listdir(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _is_fuse_mount(path: Path) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 2 and fields[1] == target and fields[2].startswith("fuse"):
                    return True
    except OSError:
        pass
    return False


def account_key(creds: Credentials) -> str:
    """A short, non-secret directory name for one account/app pair."""
    raw = f"{creds.server_url}\0{creds.client_id}\0{creds.jwt}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def set_read_ahead(target: str, kb: int) -> None:
    """Raise the kernel's read-ahead for this mount (root only; gcsfuse does the same).

    The kernel's default of 128 KiB makes a sequential read arrive as 128 KiB FUSE
    requests; at 1 MiB the per-request cost in this Python process drops by about a
    quarter of the read time (scripts/bench). The device numbers come from
    /proc/self/mountinfo: the daemon must never stat its own mountpoint, so `target`
    is the already resolved path.
    """
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and fields[4] == target:
                    bdi = fields[2]
        path = Path("/sys/class/bdi") / bdi / "read_ahead_kb"
        path.write_text(str(kb))
        log.debug("read-ahead of %s set to %d KiB", target, kb)
    except (OSError, UnboundLocalError) as exc:
        log.debug("could not raise the read-ahead of %s (needs root): %s", target, exc)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_block_memory(block_size: int, cache_bytes: int) -> bool:
    """Let glibc keep the memory of freed cache blocks for the next ones (mallopt).

    Why: by default glibc serves a block-sized allocation from a fresh mmap, or trims
    the heap top once a block is freed, so a new block often lands in pages the kernel
    must fault in and zero again: every 4 KiB is a page fault inside the socket read that
    fills it, about a seventh of rcfs' CPU in a cold streamed read (perf, bench-results/
    anchors-read.md). Blocks come from the heap, and up to the cache's size of freed
    heap stays mapped for reuse. Bounded: the cache itself is bounded by --cache-size.
    False when the C library has no mallopt (musl); rcfs then runs as before, slower.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc refuses an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2 on 64-bit).
    mmap_ok = mallopt(M_MMAP_THRESHOLD, min(32 << 20, 2 * block_size + (64 << 10))) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, min(cache_bytes, 1 << 30)) == 1
    return mmap_ok and trim_ok


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _watch_signals(signals: AsyncIterator[int], cancel: Callable[[], None],
                         on_stop: Callable[[], None], on_again: Callable[[int], None]) -> None:
    """The first signal unmounts; another one while unmounting says so and hurries what
    the caller can hurry (`on_again`), never the unmount itself."""
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if stopping:
            log.info("received %s again: already unmounting", name)
            on_again(signum)
            continue
        log.info("received %s: unmounting", name)
        stopping = True
        on_stop()
        cancel()


@contextlib.asynccontextmanager
async def _client(opts: MountOptions, token_store: TokenStore) -> AsyncIterator[RingCentralClient]:
    """The API client; with `--shared-budget`, inside the fleet's Redis connection, which
    outlives it (the client's last requests still commit their slots)."""
    if not opts.shared_budget:
        async with RingCentralClient(opts.credentials, token_store=token_store) as client:
            yield client
        return
    creds = opts.credentials
    async with SharedBudget(opts.shared_budget, password=opts.shared_budget_password,
                            scope=scope_of(creds.server_url, creds.client_id, creds.jwt),
                            memo=token_store.path.parent / "fleet.json") as shared:
        if not shared.healthy:
            log.warning("shared budget not reachable at mount time: pacing alone until it answers")
        async with RingCentralClient(creds, token_store=token_store, shared=shared) as client:
            shared.info = lambda: {"requests": client.stats.total_requests}
            yield client


async def run_mount(opts: MountOptions, ready: Callable[[], None] = lambda: None,
                    on_stop: Callable[[], None] = lambda: None,
                    on_again: Callable[[int], None] = lambda signum: None) -> None:
    """Mount and serve until unmounted or signalled. Raises MountError on setup failure.

    SIGINT, SIGTERM and SIGHUP are this function's from its start to the end of the
    unmount: the first one unmounts, and one more (a second SIGTERM from a service
    manager, an impatient Ctrl-C) waits in the receiver instead of raising
    KeyboardInterrupt in the middle of the cleanup, which left the mount behind. Those
    still pending at the end go to the handlers outside; `on_stop` (called once the
    stop has begun: a signal, an unmount from outside, an error) tells them rcfs is
    already stopping. `on_again(signum)`: a signal after the first, while serving."""
    if not keep_block_memory(opts.block_size, opts.cache_bytes):
        log.info("could not tune the allocator (no glibc mallopt): cache blocks may cost page faults")
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        try:
            await _serve(opts, ready, signals, on_stop, on_again)
        finally:
            on_stop()


async def _serve(opts: MountOptions, ready: Callable[[], None], signals: AsyncIterator[int],
                 on_stop: Callable[[], None], on_again: Callable[[int], None]) -> None:
    # The CLI checked the state dir (rcfs.settings.prepare_state_dir); its mode is the user's.
    opts.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    acct_dir = opts.state_dir / account_key(opts.credentials)
    acct_dir.mkdir(exist_ok=True, mode=0o700)
    token_store = TokenStore(acct_dir / "tokens.json")
    state = StateStore(acct_dir / "state.json")

    async with _client(opts, token_store) as client:
        try:
            await client.auth.access_token()  # fail early on bad credentials
        except AuthError as exc:
            raise MountError(f"login failed: {exc}") from None
        except ApiError as exc:
            raise MountError(f"cannot reach {opts.credentials.server_url}: {exc}") from None

        tree = Tree(uid=os.getuid() if opts.uid is None else opts.uid,
                    gid=os.getgid() if opts.gid is None else opts.gid)
        ops: Operations | None = None
        reader = Reader(client, cache_bytes=opts.cache_bytes, block_size=opts.block_size,
                        on_size=lambda key, size: ops.size_learned(key, size) if ops else None,
                        on_content_type=lambda key, ct: ops.content_type_learned(key, ct) if ops else None)
        region = await _home_country(client)
        owners = build_owners(opts, tree, client, reader, state, spool=Spool(acct_dir / "outbox"),
                              region=region)
        outbox: OutboxOwner = owners["outbox"]  # type: ignore[assignment]
        mailbox_media = [o for o in owners.values() if isinstance(o, RemoteMediaOwner)]
        view = await company_view(client) if opts.company else CompanyView()
        company = build_company(opts, tree, client, reader, state, users=view.users, recordings=view.recordings)
        owners.update(company)

        def sent(channel: str) -> None:
            # The next look at /faxes or /mms asks for changes: the sent message shows up.
            owners["faxes" if channel == "fax" else "mms"].invalidate()  # type: ignore[attr-defined]

        # /greetings and /exports (issue 10): uploads share the outbox's sender.
        greetings: GreetingsOwner = owners["greetings"]  # type: ignore[assignment]
        exports: ExportsOwner = owners["exports"]  # type: ignore[assignment]
        exports.allowed = view.exports
        sender = Sender(client, outbox, outbox.spool, on_sent=sent, greetings=greetings)
        outbox.on_queued = sender.wake
        greetings.on_queued = sender.wake
        # /texts (issue 16): appends go out through a Sender of their own spool, channel "sms".
        texts: TextsOwner = owners["texts"]  # type: ignore[assignment]
        texts_sender = Sender(client, texts, texts.spool, channels=("sms",),
                              on_sent=lambda channel: texts.invalidate())
        texts.on_queued = texts_sender.wake
        # The learner works for the signed-in user's folders only: probing every recording
        # of a company in the background would spend the Heavy budget of a whole account.
        # (Transcripts have nothing to learn.)
        learner = BackgroundLearner(client, [o for o in mailbox_media if not isinstance(o, TextsOwner)], state,
                                    on_size=lambda key, size: ops.size_learned(key, size) if ops else None,
                                    on_content_type=lambda key, ct: ops.content_type_learned(key, ct) if ops else None)
        started = time.time()
        push = PushChannel(client, owners.values()) if opts.push else None

        def status_json() -> str:
            report = status_report.collect(client, reader, tree, learner=learner, outbox=outbox, started=started,
                                           company=company, texts=texts)
            report["push"] = push.status() if push is not None else {"state": "off"}
            return json.dumps(report, separators=(",", ":"))

        def control_xattrs() -> dict[str, str | Callable[[], str]]:
            return {"user.rc.outbox_waiting": str(outbox.waiting_count()),
                    "user.rc.texts_waiting": str(texts.waiting_count()),
                    "user.rc.greetings_waiting": str(greetings.waiting_count()),
                    status_report.STATUS_XATTR: status_json}

        ops = Operations(tree, owners, state, block_size=reader.block_size,
                         control_xattrs=control_xattrs, space=outbox.statfs_free)
        for owner in owners.values():
            owner.on_change = ops.folder_changed
        users_owner = company.get("company/users")
        if isinstance(users_owner, CompanyUsersOwner):
            def mailbox_opened(owner: FolderOwner) -> None:
                # A folder of another extension's mailbox: the adapter answers through it,
                # its syncs tell the kernel, and push carries its events once it is listed.
                ops.add_owner(owner)
                owner.on_change = ops.folder_changed
                if push is not None:
                    push.add_owner(owner)

            def mailbox_gone(owner: FolderOwner) -> None:
                ops.remove_owner(owner)
                if push is not None:
                    push.remove_owner(owner)

            users_owner.on_owner, users_owner.on_owner_gone = mailbox_opened, mailbox_gone

        fuse_options = set(pyfuse3.default_options)
        fuse_options |= {"fsname=rcfs", "subtype=rcfs", "noatime"}
        if opts.allow_other:
            fuse_options.add("allow_other")
        if opts.read_only:
            fuse_options.add("ro")
        # Resolve the path before mounting: once mounted, this process must never touch
        # its own mountpoint (a lookup would wait for the loop that is not running yet).
        target = os.path.realpath(opts.mountpoint)
        outbox.mount_target = target
        greetings.mount_target = target
        ops.mount_target = target  # new entries announced to inotify (Operations.folder_changed)
        texts.mount_target = target
        pyfuse3.init(ops, target, fuse_options)
        clean = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(reader.run)
                if not opts.read_only:
                    await nursery.start(sender.run)
                    await nursery.start(texts_sender.run)
                # Reads waiting on downloads end at once, or the loop would wait for them.
                nursery.start_soon(_watch_signals, signals, lambda: (reader.stop(), pyfuse3.terminate()), on_stop,
                                   on_again)
                await nursery.start(exports.manager.run)
                if opts.background:
                    nursery.start_soon(learner.run)
                if push is not None:
                    await nursery.start(push.run)
                else:
                    log.info("push is off (--no-push): listings are re-checked on look after their TTL")
                nursery.start_soon(_notify_when_serving, ops, str(opts.mountpoint))
                if opts.read_ahead_kb:
                    ops.before_first_request = functools.partial(set_read_ahead, target, opts.read_ahead_kb)
                log.info("mounted %s on %s", opts.credentials.server_url, opts.mountpoint)
                ready()
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
            clean = True
        finally:
            systemd.notify("STOPPING=1")
            state.flush()
            pyfuse3.close(unmount=clean)
            waiting = outbox.waiting_count()
            if texts.waiting_count():
                log.warning("%d text(s) not sent yet; they stay in the spool and go out at the next mount",
                            texts.waiting_count())
            if greetings.waiting_count():
                log.warning("%d greeting upload(s) not finished yet; they stay in the spool and go out at "
                            "the next mount", greetings.waiting_count())
            if waiting:
                log.warning("%d outbox item(s) not sent yet; they stay in the spool and go out at the "
                            "next mount", waiting)
            if not clean:
                log.error("rcfs stopped unexpectedly; clear the mountpoint with: rcfs umount %s",
                          opts.mountpoint)


async def _home_country(client: RingCentralClient) -> str:
    """The account's country (ISO code): the default for numbers written without +."""
    try:
        ext = await client.get_extension()
        code = (((ext.get("regionalSettings") or {}).get("homeCountry") or {}).get("isoCode"))
        if isinstance(code, str) and len(code) == 2:
            return code.upper()
    except ApiError as exc:
        log.info("cannot read the extension's home country (%s); numbers default to US", exc)
    return "US"


def build_owners(opts: MountOptions, tree: Tree, client: RingCentralClient, reader: Reader,
                 state: StateStore, *, spool: Spool, region: str = "US",
                 account_dir: Path | None = None) -> dict[str, FolderOwner]:
    """The top-level folders, in the order `ls` shows them, each with its owner.

    `account_dir`: where /greetings spools its uploads and /exports keeps its tasks
    (default: the folder holding the outbox spool, i.e. the account's state dir)."""
    account_dir = account_dir or spool.root.parent
    media = dict(client=client, reader=reader, state=state, direct_io_above=opts.direct_io_above,
                 priority_of=reader_priority, listing_wait=opts.listing_wait)
    # The signed-in user's mailbox is the top level (rcfs.mailbox) ...
    owners: dict[str, FolderOwner] = dict(Mailbox.media(
        tree, tree.root, "~", since=opts.since, message_ttl=opts.message_ttl,
        recording_ttl=opts.recording_ttl, media=media, region=region,
        texts_spool=None if opts.read_only else Spool(account_dir / "texts-spool")).owners)
    # ... with the folders only the signed-in user has.
    for name in ("outbox", "greetings", "exports"):
        folder = tree.mkdir(tree.root, name, key=f"dir:{name}", writable=True)
        if name == "outbox":
            owners[name] = OutboxOwner(tree, folder, spool, default_region=region, settle=opts.outbox_settle)
        elif name == "greetings":
            owners[name] = GreetingsOwner(tree, folder, Spool(account_dir / "greetings-spool"),
                                          model=GreetingsModel(client), ttl=opts.message_ttl, **media)
        elif name == "exports":
            owners[name] = ExportsOwner(tree, folder, ttl=opts.message_ttl,
                                        manager=ExportManager(client, account_dir), **media)
    return owners


# The permission scopes that reach beyond the signed-in user's own mailbox.
WIDE_SCOPES = frozenset({"Account", "AllExtensions", "UserExtensions", "NonUserExtensions", "RoleBased",
                         "Federation"})


@dataclasses.dataclass
class CompanyView:
    """What the signed-in user may do beyond their own mailbox (the authorization profile)."""

    users: bool = False  # read other extensions' mailboxes
    recordings: bool = False  # read the company call log and its recordings
    exports: bool = True  # message-store exports (they cover every extension: admins only)


async def company_view(client: RingCentralClient) -> CompanyView:
    """What the signed-in user may see beyond their own mailbox, from the authorization
    profile (one request at mount). rcfs shows /company only for what this grants and
    refuses an export the profile does not allow, so it provokes no 403 it could have
    foreseen; if the profile cannot be read, there is no /company (and exports are tried)."""
    try:
        profile = await client.get_authz_profile()
    except ApiError as exc:
        log.info("cannot read the authorization profile (%s); no /company", exc)
        return CompanyView()
    scopes: dict[str, set[str]] = {}
    for item in profile.get("permissions") or []:
        if not isinstance(item, dict):
            continue
        pid = (item.get("permission") or {}).get("id") if isinstance(item.get("permission"), dict) else None
        if isinstance(pid, str):
            scopes.setdefault(pid, set()).update(s for s in item.get("scopes") or [] if isinstance(s, str))
    return CompanyView(users=bool(scopes.get("ReadMessages", set()) & WIDE_SCOPES),
                       recordings="FullCompanyCallLog" in scopes and "ReadCallRecording" in scopes,
                       exports="Users" in scopes)


def build_company(opts: MountOptions, tree: Tree, client: RingCentralClient, reader: Reader,
                  state: StateStore, *, users: bool, recordings: bool) -> dict[str, FolderOwner]:
    """/company and its owners (`rcfs.folders.company`): /company/users when other
    mailboxes may be read, /company/recordings when the company call log may."""
    if not (users or recordings):
        return {}
    media = dict(client=client, reader=reader, state=state, direct_io_above=opts.direct_io_above,
                 priority_of=reader_priority, listing_wait=opts.listing_wait)
    company = tree.mkdir(tree.root, "company", key="dir:company")
    owners: dict[str, FolderOwner] = {}
    if users:
        def make_mailbox(folder, ext_id: str, label: str) -> Mailbox:
            return Mailbox.media(tree, folder, ext_id, since=opts.since, message_ttl=opts.message_ttl,
                                 recording_ttl=opts.recording_ttl, media=media, label=label)

        folder = tree.mkdir(company, "users", key="dir:company:users")
        owners["company/users"] = CompanyUsersOwner(tree, folder, client=client, make_mailbox=make_mailbox,
                                                    ttl=opts.message_ttl, listing_wait=opts.listing_wait)
    if recordings:
        folder = tree.mkdir(company, "recordings", key="dir:company:recordings")
        owners["company/recordings"] = CompanyRecordingsOwner(tree, folder, ttl=opts.recording_ttl,
                                                              since=opts.since, **media)
    return owners


async def _notify_when_serving(ops: Operations, mountpoint: str) -> None:
    """systemd (Type=notify): ready once the kernel's INIT has been answered, i.e. the
    mount serves requests, not merely exists."""
    await ops.initialized.wait()
    systemd.notify(f"READY=1\nSTATUS=serving {mountpoint}")


# ---------------------------------------------------------------------------------------
# demo mode: a private emulator in a child process


@dataclasses.dataclass
class DemoServer:
    process: subprocess.Popen
    platform_url: str
    media_url: str

    def kill(self) -> None:
        """At once (safe in a signal handler: `stop` may be waiting in the main thread)."""
        try:
            self.process.kill()  # nothing if it was reaped already
        except OSError:
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_demo_emulator(extra_args: list[str] | None = None, timeout: float = 60.0,
                        stderr=None) -> DemoServer:
    """Start `python -m rcfs.emulator` on loopback and wait for its readiness line.

    The caller becomes the emulator's parent and must be the process that stops it
    (`DemoServer.stop`): only a parent can wait for its child. `stderr` (a file) is where
    the emulator's own messages go; None: this process's stderr.
    """
    import selectors
    import time

    cmd = [sys.executable, "-m", "rcfs.emulator", "--host", "127.0.0.1", "--port", "0",
           "--media-port", "0", *(extra_args or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=stderr, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise MountError(f"the demo emulator exited with status {proc.returncode}")
            if not sel.select(timeout=0.5):
                continue
            line = proc.stdout.readline()
            if "ready" in line:
                fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
                # Keep reading its stdout so the emulator can never block on a full pipe.
                threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
                return DemoServer(proc, fields["platform"], fields["media"])
        raise MountError("the demo emulator did not start within %d s" % timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        sel.close()


def _drain(stream) -> None:
    for _ in stream:
        pass
