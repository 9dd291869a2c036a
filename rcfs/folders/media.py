"""Shared by every folder of remote media (faxes, voicemail, recordings, MMS): listings
that refresh after a TTL with single flight, and reads through the block-cache reader.

Unknown sizes (recordings, attachments without `size`): such a file shows size 0 with an
attribute timeout of 0 until its size is learned. `ls -l` therefore costs no request.
`open()` resolves the size with the first content request (which also starts the
download, so nothing is wasted), and the kernel re-asks getattr before reading, so
`cat`, `cp`, `rsync`, `tar` and `sha256sum` see the exact size. Once learned, a size is
exact for good and persisted across remounts.

Listings have a deadline (`listing_wait`, 15 s by default; `rcfs mount --listing-wait`).
A refresh holds the folder's lock across network calls, and a rate-limited group can
make those calls wait a whole penalty (60 s and more). So a refresh, lock wait included,
gives up at the deadline: a folder listed before shows its previous listing (logged), and
a first listing that could not be had fails with EAGAIN ("Resource temporarily
unavailable"): nothing is wrong with the folder, asking again later works. EAGAIN rather
than EIO so that a script can tell "try again" from "broken".
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable

import trio

from ..api.client import Priority
from ..api.errors import ApiError
from ..reader import Reader, Source
from ..state import StateStore
from ..tree import File, Folder, Node, Tree
from .base import FolderOwner, Opened, Refused

# Seconds a listing may take, lock wait included, before the previous one is served.
LISTING_WAIT = 15.0

log = logging.getLogger(__name__)


class RemoteMediaOwner(FolderOwner):
    """A top-level folder filled from an API listing; its files are read-only media."""

    read_only_reason = "holds the account's media, which is read-only"

    def __init__(self, tree: Tree, folder: Folder, *, client, reader: Reader, state: StateStore,
                 ttl: float, direct_io_above: int | None,
                 priority_of: Callable[[int], Priority], listing_wait: float = LISTING_WAIT) -> None:
        super().__init__(tree, folder)
        self.name = folder.name
        self.client = client
        self.reader = reader
        self.state = state
        self.ttl = ttl
        self.direct_io_above = direct_io_above
        self.priority_of = priority_of
        self.listing_wait = listing_wait
        self.loaded_at: float | None = None  # trio clock of the last successful refresh
        # message/call id -> names of the entries it produced in the folder
        self.entries: dict[str, list[str]] = {}
        self._lock = trio.Lock()

    # listing ------------------------------------------------------------------------
    def is_fresh(self) -> bool:
        return self.loaded_at is not None and trio.current_time() - self.loaded_at < self.ttl

    def invalidate(self) -> None:
        """The next look at this folder asks the API again (e.g. after a send)."""
        self.loaded_at = None

    async def refresh(self, folder: Folder) -> None:
        """Make sure the top-level listing is no older than the TTL.

        A refresh that fails, or that cannot finish within `listing_wait` seconds (lock
        wait included), keeps the old listing of a folder that was loaded before (with a
        warning) rather than failing the `ls`; a first load that fails raises, and one
        that runs out of time is refused with EAGAIN.
        """
        if folder is not self.folder or self.is_fresh():
            return
        with trio.move_on_after(self.listing_wait) as deadline:
            async with self._lock:  # single flight: concurrent `ls` share one refresh
                if self.is_fresh():
                    return
                try:
                    await self.load()
                except ApiError as exc:
                    if self.loaded_at is None:
                        raise
                    log.warning("refreshing /%s failed, showing the previous listing: %s", self.name, exc)
                    self.loaded_at = trio.current_time()  # do not hammer a failing API
                    return
                self.loaded_at = trio.current_time()
                self.state.maybe_flush()
        if not deadline.cancelled_caught:
            return
        if self.loaded_at is not None:
            log.warning("refreshing /%s took more than %g s (rate limit or slow network), showing "
                        "the previous listing", self.name, self.listing_wait)
            self.loaded_at = trio.current_time()  # the next `ls` within the TTL does not wait again
            return
        raise Refused(errno.EAGAIN, f"/{self.name}: the first listing took more than {self.listing_wait:g} s "
                                    "(rate limit or slow network); try again shortly")

    async def load(self) -> None:
        """Bring the folder in step with the account (subclasses)."""
        raise NotImplementedError

    def remove_entries(self, object_id: str) -> None:
        for name in self.entries.pop(object_id, []):
            self.tree.remove(self.folder, name)

    # reads ----------------------------------------------------------------------------
    async def open(self, node: File, flags: int, pid: int) -> Opened:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise self.refuse(f"cannot write {node.name!r}")
        handle = await self.reader.open(Source(key=node.key, url=node.url, size=node.size),
                                        priority=self.priority_of(pid))
        # Media never changes once created, so the kernel may keep pages across opens.
        # Large files skip the page cache: a cold read of a recording then costs one
        # copy into the reader's buffer instead of a page-cache fill plus a copy (the
        # biggest CPU cost of a cold read, measured in scripts/bench), and a 2 GB stream
        # does not evict the rest of the machine's cache. The block cache serves re-reads.
        size = self.reader.known_size(node.key)
        direct = self.direct_io_above is not None and size is not None and size >= self.direct_io_above
        return Opened(handle, direct_io=direct, keep_cache=True)

    async def read(self, handle: int, offset: int, length: int):
        return await self.reader.read(handle, offset, length)

    async def release(self, handle: int) -> None:
        self.reader.close(handle)

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
