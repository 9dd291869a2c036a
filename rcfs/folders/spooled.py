"""What the outbox and /greetings share: a file written into the folder is spooled to
local disk, checked and journalled before `close` succeeds, then a sender uploads it.

Moved out of `rcfs.folders.outbox` (where the behaviour is described) unchanged, so
that "written here, sent from the spool" is one piece of code with two users:

    SpooledWriter           one open file being written: its spool part and item
    SpooledOwner            a FolderOwner with a spool (`rcfs.spool`), its items and
                            the write path: `_write_spooled` (EFBIG over the channel's
                            limit, ENOSPC/EDQUOT when the spool's disk is full, the early
                            MIME check: EMEDIUMTYPE at `write()` as soon as the first bytes
                            show the type), `_flush_spooled` (the last close finishes the
                            file), `_release_spooled`, `_finish` (seal + fsync, EINVAL when
                            empty unless the owner keeps empty files (`empty_allowed`), the
                            full MIME check and the channel's size and page limits, then the
                            owner's `_accept` journals it) and `_drop` (forget a refused
                            file: node, part and journal; owners may restore what a refused
                            rewrite would have replaced: `replaces`, `displaced`).
    is_temporary            the names held back as temporaries (rsync, GIO, sed -i, perl -i,
                            mktemp, Python's tempfile, Qt, editors' backups and swap files),
                            for the outbox and /greetings alike.

The channel of a writer (`fax`, `mms`, `greeting`) picks its row of `rcfs.mime`'s table.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shutil
from typing import Callable

import trio

from .. import mime
from ..spool import Item, Part, Spool
from ..tree import File, Folder, Node, Tree
from .base import FolderOwner, Refused

log = logging.getLogger(__name__)

# Names that are never sent until renamed: hidden files (rsync's `.NAME.XXXXXX`, GIO's
# `.goutputstream-XXXXXX`, Emacs' `.#NAME`, vim's `.NAME.swp`, LibreOffice's lock), backups,
# and what downloaders and editors write while they work (LibreOffice's `luXXXX.tmp`).
_TEMP_NAME = re.compile(r"(^\.)|(~$)|(^#.*#$)|(\.(swp|swx|swo|tmp|temp|part|partial|crdownload|kate-swp|bak)$)",
                        re.IGNORECASE)
# The names programs give the temporary file they write and then rename (the X's are
# random; the case matters): each exactly as its program makes it, so a name a person
# chose (`tmp.pdf`, `sediment.pdf`, `tmp_scan.pdf`) does not match. Without this, a crash
# between such a program's close and its rename would send the temporary under its
# temporary name after the next mount (`sed -i OPTIONS.txt` faxing the options).
_PROGRAM_TEMP = re.compile(
    r"sed[A-Za-z0-9]{6}"  # GNU sed -i
    r"|XX[A-Za-z0-9]{6}"  # perl -i (5.28 and later)
    r"|tmp[a-z0-9_]{8}"  # Python's tempfile (mkstemp, NamedTemporaryFile) with no prefix or suffix
    r"|tmp\.[A-Za-z0-9]{10}"  # mktemp, mktemp -p DIR
    # Qt's QSaveFile and GLib's g_file_set_contents: NAME.EXT.XXXXXX. The six random
    # characters must hold a letter and a capital or digit (all lowercase: a word).
    r"|.+\.[^.]+\.(?=[a-z0-9]*[A-Z0-9])(?=[A-Z0-9]*[A-Za-z])[A-Za-z0-9]{6}")


def is_temporary(name: str) -> bool:
    """A name that is held, never sent (or uploaded) under it: the one definition for the
    outbox and /greetings (README, "What works as a writer")."""
    return bool(_TEMP_NAME.search(name)) or bool(_PROGRAM_TEMP.fullmatch(name))


# How a log line or an error names one message of a channel.
ARTICLES = {"fax": "a fax", "mms": "an MMS", "greeting": "a greeting"}


@dataclasses.dataclass
class SpooledWriter:
    """An open file being written into a spooled folder (the outbox, a greeting)."""

    node: File
    item: Item
    part: Part
    fd: int
    channel: str
    pid: int = 0  # the process that opened it
    head: bytearray = dataclasses.field(default_factory=bytearray)
    mime: str | None = None  # settled type, once known
    checked_early: int = 0  # how far into the head the early check has looked
    error: Refused | None = None  # sticky: every later write/flush gets it
    finished: bool = False
    cancelled: bool = False
    # A file that was already closed once and is written again gets a new part (copy on
    # write): `replaces` is the part it had, which stays the journalled (and, for the
    # outbox, promised) content until this writer closes successfully; `was` its state.
    replaces: Part | None = None
    was: str = ""
    # An item already sent (or queued) that this writer's new item takes the place of,
    # on the same file: it comes back if the new version is refused or never written.
    displaced: Item | None = None
    dirty: bool = False  # opened with O_TRUNC, written or truncated since it was opened


@dataclasses.dataclass
class LocalRead:
    """An open file whose bytes are here: generated text (STATUS.txt) or a spooled part."""

    data: bytes | None = None
    part: Part | None = None


class SpooledOwner(FolderOwner):
    """A folder whose written files go to a spool and from there to a sender."""

    # Whether a file closed with no bytes is kept (the outbox: `touch`, `mktemp` and
    # `: >` make one, filled later) or refused with EINVAL (a greeting).
    empty_allowed = False

    def __init__(self, tree: Tree, folder: Folder, spool: Spool, *,
                 on_queued: Callable[[], None] = lambda: None, **kw) -> None:
        # **kw: the other base's arguments when an owner also reads remote media
        # (/greetings: SpooledOwner + RemoteMediaOwner).
        super().__init__(tree, folder, **kw)
        self.spool = spool
        self.on_queued = on_queued
        self.mount_target = ""  # the mountpoint's real path, for matching /proc/PID/fd links
        self.items: dict[str, Item] = {}
        self._item_nodes: dict[str, Node] = {}  # item id -> its node (file or bundle folder)
        self._handles: dict[int, object] = {}
        self._next_handle = 1

    def _writer_of(self, node: File) -> SpooledWriter | None:
        for h in self._handles.values():
            if isinstance(h, SpooledWriter) and h.node is node and not h.finished:
                return h
        return None

    def _handle(self, state: object) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = state
        return handle

    async def _read_local(self, state: object, offset: int, length: int) -> bytes:
        """Reads of what this owner keeps locally: generated text, a spooled part, or a
        file still being written; anything else is EBADF."""
        if isinstance(state, LocalRead):
            if state.data is not None:
                return state.data[offset: offset + length]
            assert state.part is not None
            return await trio.to_thread.run_sync(self.spool.read_part, state.part, offset, length)
        if isinstance(state, SpooledWriter):
            return os.pread(state.fd, length, offset)
        raise Refused(errno.EBADF)

    def _truncate_writer(self, node: File, size: int) -> bool:
        """truncate/O_TRUNC of a file being written here: True when it was one."""
        writer = self._writer_of(node)
        if writer is None:
            return False
        os.ftruncate(writer.fd, size)
        del writer.head[size:]
        writer.node.size = size
        writer.dirty = True
        return True

    async def _write_spooled(self, w: SpooledWriter, offset: int, data: bytes) -> int:
        """write() into the spool: size limit, ENOSPC, the early type check."""
        if w.error is not None:
            raise w.error
        if w.finished:
            raise Refused(errno.EBADF, f"{w.node.name!r} was already closed and handed to the sender")
        limit = mime.channel(w.channel).max_total_bytes
        if offset + len(data) > limit:
            w.error = Refused(errno.EFBIG, f"{w.node.name!r}: over the {limit}-byte limit of "
                                           f"{ARTICLES.get(w.channel, w.channel)}; not sent")
            raise w.error
        try:
            written = os.pwrite(w.fd, data, offset)
        except OSError as exc:
            code = exc.errno or errno.EIO
            why = "the spool's disk is full" if code in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            w.error = Refused(code, f"{w.node.name!r}: cannot spool: {why}; not sent")
            raise w.error from None
        w.node.size = max(w.node.size or 0, offset + written)
        w.dirty = True
        self._early_check(w, offset, data[:written])
        return written

    def _early_check(self, w: SpooledWriter, offset: int, data: bytes) -> None:
        """Refuse at write() as soon as the first bytes prove the type is wrong."""
        if w.mime is not None or offset > len(w.head) or len(w.head) >= mime.SNIFF_WINDOW:
            return
        w.head[offset:] = data[: mime.SNIFF_WINDOW - offset]
        # Look at the prefix only when it can have changed its verdict (see rcfs.mime).
        if len(w.head) < mime.EARLY_BYTES or (w.checked_early and len(w.head) < mime.SNIFF_WINDOW):
            return
        w.checked_early = len(w.head)
        try:
            w.mime = mime.check_prefix(w.channel, bytes(w.head))
        except mime.MediaRejected as exc:
            w.error = Refused(exc.errno, f"{w.node.name!r}: {exc.reason}; not sent")
            raise w.error from None

    async def fsync(self, handle: int) -> None:
        state = self._handles.get(handle)
        if isinstance(state, SpooledWriter) and not state.finished:
            await trio.to_thread.run_sync(os.fsync, state.fd)

    async def _flush_spooled(self, w: SpooledWriter) -> None:
        """flush() (close of a descriptor): the file is finished at the last close."""
        if not w.finished and self._open_elsewhere(w):
            # close() of one of several descriptors: `cat a.pdf > f` opens f, dup2()s it
            # onto stdout and closes the original before cat writes a byte. The file is
            # complete only at the last close.
            return
        await self._finish(w)

    def path_of(self, node: Node) -> str:
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return os.path.join(self.mount_target, *reversed(parts))

    def _open_elsewhere(self, w: "SpooledWriter | object") -> bool:
        """Whether the writing process still holds another descriptor of this file.

        Only readlink() on /proc: it never calls into this filesystem (a stat would).
        The descriptor being closed is already gone from the table when FLUSH arrives.
        `w`: any open file with `pid` and `node` (a spooled writer, the outbox's OPTIONS.txt).
        """
        pid, node = getattr(w, "pid", 0), getattr(w, "node")
        if not pid or not self.mount_target:
            return False
        path = self.path_of(node)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    return True
            except OSError:
                continue
        return False

    async def _release_spooled(self, w: SpooledWriter) -> None:
        """release(): every descriptor is closed."""
        if not w.finished and not w.cancelled and (w.node.size or self.empty_allowed):
            # Every descriptor is closed now; the last flush was deferred (see flush).
            try:
                await self._finish(w)
            except Refused as exc:
                log.warning("%s: %s", self.name, exc)
        elif not w.finished:
            self._drop(w, "closed without content")
        os.close(w.fd)

    async def _finish(self, w: SpooledWriter) -> None:
        """close(): check the whole file, make it durable, hand it on. Errors reach the writer."""
        if w.finished:
            if w.error is not None:
                raise w.error
            return
        if w.cancelled:
            w.finished = True
            self.spool.remove_part(w.part.data)  # removed while written: nothing is kept
            return
        if w.error is not None:
            w.finished = True
            self._drop(w, str(w.error))
            raise w.error
        try:
            await trio.to_thread.run_sync(self.spool.seal_part, w.fd, w.part)
            if w.part.size == 0 and self.empty_allowed:
                w.part.mime = ""  # kept, never sent while empty: there is no type to check
            else:
                await self._check_content(w)
        except mime.MediaRejected as exc:
            w.error = Refused(exc.errno, f"{'/'.join(w.item.path[:-1] + [w.node.name])}: {exc.reason}; not sent")
        except OSError as exc:
            code = exc.errno or errno.EIO
            why = "the spool's disk is full" if code in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            w.error = Refused(code, f"{w.node.name!r}: cannot spool: {why}; not sent")
        w.finished = True
        if w.error is not None:
            self._drop(w, str(w.error))
            raise w.error
        await self._accept(w)

    async def _check_content(self, w: SpooledWriter) -> None:
        """The whole sealed file against its channel: MediaRejected says why not."""
        path = self.spool.data_path(w.part.data)
        if w.part.size == 0:
            raise mime.MediaRejected("the file is empty", errno.EINVAL)
        found = await trio.to_thread.run_sync(mime.sniff, bytes(w.head), path)
        mime.check(w.channel, found)
        w.part.mime = mime.canonical(found)
        item = w.item
        parts = [p for p in item.parts if p.data not in (w.part.data, w.replaces.data if w.replaces else "")]
        mime.check_sizes(w.channel, [p.size for p in parts + [w.part]])
        if w.channel == "fax":
            pages = await trio.to_thread.run_sync(mime.page_count, found, path)
            mime.check_pages(w.channel, pages)

    async def _accept(self, w: SpooledWriter) -> None:
        """The written file passed every check: journal it and hand it on (owners)."""
        raise NotImplementedError

    def _drop(self, w: SpooledWriter, why: str) -> None:
        """Forget a file that will not be sent: its node, its part, its journal if new."""
        parent = w.node.parent
        if parent is not None and parent.children.get(w.node.name) is w.node:
            self.tree.remove(parent, w.node.name)
        self.spool.remove_part(w.part.data)
        item = w.item
        if item.kind == "file":
            self.items.pop(item.id, None)
            self._item_nodes.pop(item.id, None)
            self.spool.delete(item)
        log.debug("%s: dropped %s: %s", self.name, w.node.name, why)

    async def _save(self, item: Item) -> None:
        await trio.to_thread.run_sync(self.spool.save, item)

    def statfs_free(self) -> tuple[int, int, int]:
        """(total, free, available) bytes of the spool's disk, for statfs: file managers
        check the free space of the target before they copy."""
        usage = shutil.disk_usage(self.spool.root)
        return usage.total, usage.free, usage.free
