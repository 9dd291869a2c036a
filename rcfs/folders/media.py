"""Shared by every folder of remote media (faxes, voicemail, recordings, MMS): listings
that refresh after a TTL with single flight, and reads through the block-cache reader.

Unknown sizes (recordings, attachments without `size`): such a file shows a provisional
size (PROVISIONAL_SIZE) until its size is learned. `ls -l` therefore costs no request.
`open()` resolves the size with the first content request (which also starts the
download, so nothing is wasted) before any byte is read, and the kernel re-asks getattr
after it (the adapter invalidates the cached attributes when a size is learned; the
provisional ones also expire after a short timeout), so `cat`, `cp`, `rsync`, `tar` and
`sha256sum` see the exact size. Once learned, a size is exact for good and persisted across remounts;
`rcfs.background` learns the rest while the API is idle.

Why not size 0: GLib types every empty regular file `application/x-zerosize` without
looking at its name, so a desktop offered a text editor for every recording. With any
non-zero size it goes by the name (and sniffs the content only where the name is
ambiguous, which opens the file and so learns the size).

Listings have a deadline (`listing_wait`, 60 s by default; `rcfs mount --listing-wait`).
A refresh is a chain of network calls, and a rate-limited group can make them wait a
whole penalty (60 s and more); a first listing of a large account needs more pages than
the Light group allows a minute. So the refresh runs as a task of its own and an `ls`
waits for it at most until the deadline: a folder listed before then shows its previous
listing (logged), and a first listing that is not done fails with EAGAIN ("Resource
temporarily unavailable") while the task goes on, so asking again later shows it.
EAGAIN rather than EIO so that a script can tell "try again" from "broken".

Folder scans: `cp -r`, `rsync` and `tar` read a folder's files one after another, and
each open would pay a round trip of its own (most media files are small, one request
each). So the owner watches, per process, which files of its folder are opened and
read: once a process opens the next file in one of the orders such tools walk a folder
in (readdir order, which `tar` follows; name order, `rsync` and `cp a b c`; inode
order, which `cp -r` sorts readdir by) right after reading the one before, it is taken
for a scan, and the next small files in that order are prefetched into the block
cache (`Reader.prefetch`), so their opens are answered without a wait. The look-ahead
moves with every open and starts at one file, doubling with each step up to
`prefetch_depth`: a scan that stops early leaves at most that many requests unused,
two neighbours opened by chance at most one; a lone `cat`, or files opened in no such
order, prefetch nothing.
Indexers and thumbnailers (BACKGROUND readers) never prefetch.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
from typing import Callable

import trio

from ..api.client import Priority
from ..api.errors import ApiError, PermissionDenied
from ..reader import Reader, Source
from ..state import StateStore
from ..tree import File, Folder, Node, Tree
from .base import FolderOwner, Opened, Refused

# Seconds a listing may take, lock wait included, before the previous one is served.
LISTING_WAIT = 15.0

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class _Load:
    """One refresh under way: its waiters wait on `done`, then look at `error`."""

    started: float
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    error: Exception | None = None
    reported: bool = False  # the "showing the previous listing" warning was logged


@dataclasses.dataclass(eq=False)
class _Scan:
    """What one process last opened in the folder (see "Folder scans" above)."""

    last: File  # the file it opened last
    handle: int  # ... through this reader handle
    read: bool = False  # ... and read from it
    run: int = 0  # opens in a row, each the successor of the one before in `orders`
    orders: tuple[str, ...] = ()  # the walk orders all of them agree with


# The orders tools walk a folder in: readdir (cookie) order, name order, inode order.
_ORDER_KEYS: dict[str, Callable[[File], object]] = {
    "readdir": lambda n: n.cookie,
    "name": lambda n: os.fsencode(n.name),
    "inode": lambda n: n.inode,
}
SCAN_PROCESSES = 64  # processes whose last open is remembered (the oldest is forgotten)


# Non-zero so that desktops type the file by its name (see above); one page, so `du` of
# a folder whose sizes are not learned yet stays small and nothing looks like a real size.
PROVISIONAL_SIZE = 4096


class RemoteMediaOwner(FolderOwner):
    """A top-level folder filled from an API listing; its files are read-only media."""

    read_only_reason = "holds the account's media, which is read-only"

    def __init__(self, tree: Tree, folder: Folder, *, client, reader: Reader, state: StateStore,
                 ttl: float, direct_io_above: int | None,
                 priority_of: Callable[[int], Priority], listing_wait: float = LISTING_WAIT,
                 extension_id: str = "~", label: str | None = None) -> None:
        super().__init__(tree, folder)
        # The path the log names (`faxes`, `company/users/102 Alice Smith/faxes`).
        self.name = label or folder.name
        # Whose mailbox this folder shows: `~` the signed-in user's, else an extension id.
        self.extension_id = extension_id
        # Node keys (inode numbers, learned sizes) of another mailbox carry its extension:
        # the signed-in user's own mailbox is also under /company/users, and a call
        # between two extensions is in both their logs, so one object can be in two places.
        self.key_prefix = "" if extension_id == "~" else f"ext:{extension_id}:"
        self.client = client
        self.reader = reader
        self.state = state
        self.ttl = ttl
        self.direct_io_above = direct_io_above
        self.priority_of = priority_of
        self.listing_wait = listing_wait
        self.loaded_at: float | None = None  # trio clock of the last successful refresh
        self.load_started: float | None = None  # ... and when that refresh started (push trust)
        self.listed = False  # a listing was made once: from then on a failed refresh serves it
        # message/call id -> names of the entries it produced in the folder
        self.entries: dict[str, list[str]] = {}
        self._load: _Load | None = None  # the refresh under way, if any
        # A first listing refused for a permission: (until, error). Within the TTL every
        # look gets the same EACCES without asking again (a folder of another extension
        # the user may not read must not cost a 403 per `ls`).
        self._denied: tuple[float, Exception] | None = None
        self._generation = 0  # bumped by invalidate()
        self._scans: collections.OrderedDict[int, _Scan] = collections.OrderedDict()  # by pid
        self._pid_of: dict[int, int] = {}  # reader handle -> pid that opened it
        self._walks: dict[int, tuple[tuple[int, int], dict[str, tuple[list[File], dict[int, int]]]]] = {}

    # listing ------------------------------------------------------------------------
    def is_fresh(self) -> bool:
        # While push is healthy every change arrives as an event: no TTL (rcfs.push).
        return self.loaded_at is not None and (self.trusted(self.load_started)
                                               or trio.current_time() - self.loaded_at < self.ttl)

    async def sync(self) -> None:
        """Bring a listed folder in step now (a push event, or a resync after one may have
        been missed): one load after any under way, then the kernel is told what changed.
        A folder never listed is left alone: its first look lists it whole."""
        if not self.listed and self._load is None:
            return
        # What the kernel may know already. During a first listing that is nothing yet:
        # the names it brings reach the `ls` that asked for them and are no news to an
        # inotify watcher (announcing them gave an open file manager an IN_CREATE for
        # every file of the folder), so `before` is taken once that listing is done.
        before = set(self.folder.children) if self.listed else None
        for _ in range(3):  # bounded: a load under way asked before the change
            if self._load is None:
                break
            await self._load.done.wait()
        if not self.listed:
            return  # the first listing failed: the next look tries again
        if before is None:
            before = set(self.folder.children)
        self.invalidate()
        load = self._load or self._start_load()
        await load.done.wait()
        self.announce(before)
        if load.error is not None:
            self.invalidate()  # the next look asks again
            raise load.error

    def announce(self, before: set[str]) -> None:
        """Tell the adapter which names appeared and went since `before`."""
        after = set(self.folder.children)
        if after != before and self.on_change is not None:
            self.on_change(self.folder, after - before, before - after)

    async def pushed(self, notices: list) -> None:
        await self.sync()

    async def resync(self) -> None:
        await self.sync()

    def invalidate(self) -> None:
        """The next look at this folder asks the API again (e.g. after a send)."""
        self.loaded_at = None
        # A refresh under way may have asked before the change: it must not count as fresh.
        self._generation += 1

    async def refresh(self, folder: Folder) -> None:
        """Make sure the top-level listing is no older than the TTL, waiting at most
        `listing_wait` seconds for it.

        The load itself runs as a task of its own (single flight: concurrent `ls` share
        it), so a caller that stops waiting does not cancel it: a first listing that
        needs minutes of rate-limited pages finishes in the background, and the next
        `ls` shows it. A folder listed before shows its previous listing when the
        refresh fails or is not done by the deadline; a first listing raises the
        failure, or EAGAIN when it is not done by the deadline.
        """
        if folder is not self.folder or self.is_fresh():
            return
        if self._denied is not None and not self.listed:
            if trio.current_time() < self._denied[0]:
                raise self._denied[1]
            self._denied = None
        load = self._load or self._start_load()
        if self.listed:
            # Only the first callers wait, up to the load's own deadline: once it has
            # passed, every look (each lookup of `ls -l`, `cp -r`) gets the previous
            # listing at once instead of one more wait each.
            wait = load.started + self.listing_wait - trio.current_time()
        else:
            wait = self.listing_wait  # nothing else to show: each caller may wait
        with trio.move_on_after(max(0.0, wait)):
            await load.done.wait()
        if load.done.is_set():
            if load.error is not None and not self.listed:
                raise load.error
            return
        if self.listed:
            if not load.reported:
                load.reported = True
                log.warning("refreshing /%s takes more than %g s (rate limit or slow network); showing "
                            "the previous listing until it is done", self.name, self.listing_wait)
            return
        raise Refused(errno.EAGAIN, f"/{self.name}: the first listing took more than {self.listing_wait:g} s "
                                    "(rate limit or slow network); it goes on in the background, "
                                    "try again shortly")

    def _start_load(self) -> "_Load":
        load = self._load = _Load(started=trio.current_time())
        # A system task: it outlives the FUSE request that started it, and ends with the
        # mount's trio run. `_run_load` lets no exception escape.
        trio.lowlevel.spawn_system_task(self._run_load, load, name=f"rcfs refresh /{self.name}")
        return load

    async def _run_load(self, load: "_Load") -> None:
        generation = self._generation
        try:
            await self.load()
        except Exception as exc:  # noqa: BLE001 - handed to the waiters, never lost
            load.error = exc
            if self.listed:
                if isinstance(exc, ApiError):
                    log.warning("refreshing /%s failed, showing the previous listing: %s", self.name, exc)
                else:
                    log.exception("unexpected error refreshing /%s; showing the previous listing", self.name)
                self.loaded_at = trio.current_time()  # do not hammer a failing API
            else:
                log.info("listing /%s failed: %s", self.name, exc)
                if isinstance(exc, PermissionDenied):
                    self._denied = (trio.current_time() + self.ttl, exc)
        else:
            # Invalidated meanwhile: shown now, but the next look asks again.
            self.loaded_at = trio.current_time() if generation == self._generation else None
            self.load_started = load.started
            self.listed = True
            self.state.maybe_flush()
        finally:
            self._load = None
            load.done.set()

    async def load(self) -> None:
        """Bring the folder in step with the account (subclasses)."""
        raise NotImplementedError

    def remove_entries(self, object_id: str) -> None:
        for name in self.entries.pop(object_id, []):
            self.tree.remove(self.folder, name)

    def presented_size(self, node: File) -> int:
        return node.size if node.size is not None else PROVISIONAL_SIZE

    # what the background learner may probe (rcfs.background) ---------------------------
    def probe_targets(self):
        """(node, Source) for each file of this folder whose content a probe can reach:
        the file shown, and the object on the media host behind it (for message and
        recording files the same key)."""
        for node in iter_files(self.folder):
            if node.url:
                yield node, Source(key=node.key, url=node.url, size=node.size)

    def probe_learned_size(self, node: File, key: str, size: int) -> None:
        """A probe of `key` (behind `node`) found its size. Files keyed like their
        content learn it through the adapter's `size_learned` already; an owner whose
        files are keyed otherwise (greetings) shows it here."""

    # reads ----------------------------------------------------------------------------
    async def open(self, node: File, flags: int, pid: int) -> Opened:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise self.refuse(f"cannot write {node.name!r}")
        priority = self.priority_of(pid)
        handle = await self.reader.open(Source(key=node.key, url=node.url, size=node.size),
                                        priority=priority)
        if priority <= Priority.READAHEAD:
            self._follow_scan(node, handle, pid)
        # Media never changes once created, so the kernel may keep pages across opens.
        # Large files skip the page cache: a cold read of a recording then costs one
        # copy into the reader's buffer instead of a page-cache fill plus a copy (the
        # biggest CPU cost of a cold read, measured in scripts/bench), and a 2 GB stream
        # does not evict the rest of the machine's cache. The block cache serves re-reads.
        size = self.reader.known_size(node.key)
        direct = self.direct_io_above is not None and size is not None and size >= self.direct_io_above
        return Opened(handle, direct_io=direct, keep_cache=True)

    async def read(self, handle: int, offset: int, length: int):
        pid = self._pid_of.get(handle)
        if pid is not None:
            scan = self._scans.get(pid)
            if scan is not None and scan.handle == handle:
                scan.read = True
        return await self.reader.read(handle, offset, length)

    async def release(self, handle: int) -> None:
        self._pid_of.pop(handle, None)
        self.reader.close(handle)

    # folder scans (see the module docstring) ----------------------------------------------
    def _follow_scan(self, node: File, handle: int, pid: int) -> None:
        """Note that `pid` opened `node`; if that continues a scan, prefetch what follows."""
        folder = node.parent
        depth = self.reader.prefetch_depth
        if not isinstance(folder, Folder) or folder.children.get(node.name) is not node or depth == 0:
            return
        self._pid_of[handle] = pid
        scan = self._scans.get(pid)
        if scan is not None and scan.last is node:
            scan.handle = handle  # the same file again: neither a step nor a break
            return
        walks = self._walk_orders(folder)
        if scan is not None and scan.read and scan.last.parent is folder:
            before = scan.orders or tuple(walks)
            orders = tuple(o for o in before if self._successor(walks[o], scan.last) is node)
        else:
            orders = ()
        if orders:
            scan.last, scan.handle, scan.read, scan.orders = node, handle, False, orders
            scan.run += 1
            self._scans.move_to_end(pid)
        else:
            if scan is not None and scan.run:
                log.debug("scan of /%s by pid %d ends at %s (%s)", self.name, pid, scan.last.name,
                          "not read" if not scan.read else f"next opened: {node.name}")
            scan = self._scans[pid] = _Scan(last=node, handle=handle)
            self._scans.move_to_end(pid)
            while len(self._scans) > SCAN_PROCESSES:
                self._scans.popitem(last=False)
            return
        # The look-ahead doubles with every step (1, 2, 4, ... files, up to the reader's
        # prefetch depth): two neighbours opened by chance cost one request at most.
        # While the opens so far agree with several orders, only what comes next in all
        # of them is fetched: a wrong guess would cost requests, a miss only a wait.
        depth = min(depth, 1 << min(scan.run - 1, 16))
        ahead = self._ahead(walks[orders[0]], node, depth)
        for other in orders[1:]:
            also = {n.inode for n in self._ahead(walks[other], node, depth)}
            ahead = [n for n in ahead if n.inode in also]
        started = [n.name for n in ahead if self.reader.prefetch(Source(key=n.key, url=n.url, size=n.size))]
        log.debug("scan of /%s by pid %d in %s order at %s: prefetching %s", self.name, pid,
                  "/".join(orders), node.name, started)

    @staticmethod
    def _ahead(walk: tuple[list[File], dict[int, int]], node: File, depth: int) -> list[File]:
        files, position = walk
        at = position[node.inode]
        return files[at + 1 : at + 1 + depth]

    @staticmethod
    def _successor(walk: tuple[list[File], dict[int, int]], node: File) -> File | None:
        files, position = walk
        at = position.get(node.inode)
        return files[at + 1] if at is not None and at + 1 < len(files) else None

    def _walk_orders(self, folder: Folder) -> dict[str, tuple[list[File], dict[int, int]]]:
        """The folder's files in each walk order, with each file's position (by inode);
        rebuilt only when the folder changed (an entry added, renamed or removed)."""
        version = (folder.next_cookie, len(folder.children))
        cached = self._walks.get(folder.inode)
        if cached is not None and cached[0] == version:
            return cached[1]
        files = [n for n in folder.children.values() if isinstance(n, File)]
        walks = {}
        for name, key in _ORDER_KEYS.items():
            ordered = sorted(files, key=key)
            walks[name] = (ordered, {n.inode: i for i, n in enumerate(ordered)})
        self._walks[folder.inode] = (version, walks)
        return walks

    # learned facts ----------------------------------------------------------------------
    def content_type_learned(self, node: File, content_type: str) -> None:
        """A download told the real type of `node` (recordings are named by it)."""


def iter_files(node: Node):
    """All files below `node` (used by tests and statistics)."""
    if isinstance(node, Folder):
        for child in node.children.values():
            yield from iter_files(child)
    elif isinstance(node, File):
        yield node
