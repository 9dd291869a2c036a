"""Shared by every folder of remote media (faxes, voicemail, recordings, MMS): listings
that refresh after a TTL with single flight, and reads through the block-cache reader.

Unknown sizes (recordings, attachments without `size`): such a file shows a provisional
size (PROVISIONAL_SIZE) with an attribute timeout of 0 until its size is learned. `ls -l`
therefore costs no request. `open()` resolves the size with the first content request
(which also starts the download, so nothing is wasted) before any byte is read, and the
kernel re-asks getattr after it (timeout 0, and the adapter invalidates the cached
attributes when a size is learned), so `cat`, `cp`, `rsync`, `tar` and `sha256sum` see
the exact size. Once learned, a size is exact for good and persisted across remounts;
`rcfs.background` learns the rest while the API is idle.

Why not size 0: GLib types every empty regular file `application/x-zerosize` without
looking at its name, so a desktop offered a text editor for every recording. With any
non-zero size it goes by the name (and sniffs the content only where the name is
ambiguous, which opens the file and so learns the size).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import trio

from ..api.client import Priority
from ..api.errors import ApiError
from ..reader import Reader, Source
from ..state import StateStore
from ..tree import File, Folder, Node, Tree
from .base import FolderOwner, Opened

log = logging.getLogger(__name__)


# Non-zero so that desktops type the file by its name (see above); one page, so `du` of
# a folder whose sizes are not learned yet stays small and nothing looks like a real size.
PROVISIONAL_SIZE = 4096


class RemoteMediaOwner(FolderOwner):
    """A top-level folder filled from an API listing; its files are read-only media."""

    read_only_reason = "holds the account's media, which is read-only"

    def __init__(self, tree: Tree, folder: Folder, *, client, reader: Reader, state: StateStore,
                 ttl: float, direct_io_above: int | None,
                 priority_of: Callable[[int], Priority]) -> None:
        super().__init__(tree, folder)
        self.name = folder.name
        self.client = client
        self.reader = reader
        self.state = state
        self.ttl = ttl
        self.direct_io_above = direct_io_above
        self.priority_of = priority_of
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

        A failed refresh of a folder that was loaded before keeps the old listing (with
        a warning) rather than failing the `ls`; a first load that fails raises.
        """
        if folder is not self.folder or self.is_fresh():
            return
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

    async def load(self) -> None:
        """Bring the folder in step with the account (subclasses)."""
        raise NotImplementedError

    def remove_entries(self, object_id: str) -> None:
        for name in self.entries.pop(object_id, []):
            self.tree.remove(self.folder, name)

    def presented_size(self, node: File) -> int:
        return node.size if node.size is not None else PROVISIONAL_SIZE

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
