"""The pyfuse3 adapter: translates kernel requests into calls on the model, the catalog
and the reader, and domain errors into errno. It decides nothing on its own.

Every handler goes through `_handler`, which turns any exception into a FUSEError: an
exception escaping a pyfuse3 handler would end the main loop and leave the mountpoint
dead ("Transport endpoint is not connected").

Unknown sizes (recordings, attachments without `size`): such a file shows size 0 with an
attribute timeout of 0 until its size is learned. `ls -l` therefore costs no request.
`open()` resolves the size with the first content request (which also starts the
download, so nothing is wasted), and the kernel re-asks getattr before reading, so
`cat`, `cp`, `rsync`, `tar` and `sha256sum` see the exact size. Once learned, a size is
exact for good and persisted across remounts.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from typing import Any, Callable

import pyfuse3
import trio

from .api.client import Priority
from .api.errors import ApiError, AuthError, NotFound, RateLimited, Rejected
from .catalog import Catalog
from .reader import Reader, Source
from .state import StateStore
from .tree import ROOT_INODE, File, Folder, Node, Tree

log = logging.getLogger(__name__)

# Long timeouts are safe for immutable media; listings change, so their entries expire sooner.
STATIC_TIMEOUT = 300.0
ENTRY_TIMEOUT = 10.0
CONTROL_XATTR_PID = "user.rc.pid"


# Desktop indexers and thumbnailers read whole files of every folder they see (GLib
# treats only a fixed list of FUSE types, such as fuse.sshfs, as remote). Their reads
# go at BACKGROUND priority: they only spend rate-limit budget nobody is waiting for,
# so a `cp` running at the same time keeps its pace. Matched against the process name
# (/proc/PID/comm) and the program's file name (argv[0]): comm is cut to 15 characters,
# so "gdk-pixbuf-thumbnailer" shows there as "gdk-pixbuf-thum".
BACKGROUND_READERS = ("thumb", "tumbler", "tracker", "baloo", "localsearch", "gvfsd-metadata",
                      "gnome-desktop-t", "kioworker", "kio_thumbnail")


def _process_names(pid: int) -> list[str]:
    names = []
    try:
        with open(f"/proc/{pid}/comm") as fh:
            names.append(fh.read().strip().lower())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv0 = fh.read(4096).split(b"\0", 1)[0]
        names.append(os.path.basename(argv0.decode("utf-8", "replace")).lower())
    except OSError:
        pass  # gone already: whatever was read is all there is
    return names


def reader_priority(pid: int) -> Priority:
    """FOREGROUND for people and their tools, BACKGROUND for indexers and thumbnailers."""
    names = _process_names(pid)
    background = any(word in name for name in names for word in BACKGROUND_READERS)
    return Priority.BACKGROUND if background else Priority.FOREGROUND


def errno_for(exc: BaseException) -> int:
    """The errno a reader sees for a domain error."""
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, AuthError):
        return errno.EACCES
    if isinstance(exc, RateLimited):
        return errno.EAGAIN
    if isinstance(exc, Rejected):
        return errno.EINVAL
    return errno.EIO


def _handler(fn: Callable) -> Callable:
    """Map every failure of a handler to a FUSEError, logging the unexpected ones."""

    @functools.wraps(fn)
    async def wrapper(self: "Operations", *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except ApiError as exc:
            code = errno_for(exc)
            log.warning("%s failed: %s (%s)", fn.__name__, exc, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - the mount must survive any bug
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    """Read-only view of the account (outbox/greetings writes come later)."""

    def __init__(self, tree: Tree, catalog: Catalog, reader: Reader, state: StateStore, *,
                 direct_io_above: int | None = None) -> None:
        super().__init__()
        self.direct_io_above = direct_io_above
        self.tree = tree
        self.catalog = catalog
        self.reader = reader
        self.state = state
        self._inline_handles: dict[int, File] = {}
        self._next_inline = -1
        self._by_key: dict[str, File] = {}
        self.initialized = trio.Event()  # set once the kernel's INIT request arrived

    def init(self) -> None:
        self.initialized.set()

    # size learning ---------------------------------------------------------------
    def size_learned(self, key: str, size: int) -> None:
        """Reader callback: the exact size of an object is now known."""
        self.state.learn_size(key, size)
        node = self._by_key.get(key)
        if node is not None:
            node.size = size

    def content_type_learned(self, key: str, content_type: str) -> None:
        """Reader callback: a download told the real type (recordings are named by it)."""
        node = self._by_key.get(key)
        if node is not None and key.startswith("rec:"):
            self.catalog.learn_recording_type(node, content_type)

    # attributes ----------------------------------------------------------------------
    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.st_mode = self.tree.mode(node)
        attr.st_uid = self.tree.uid
        attr.st_gid = self.tree.gid
        ns = int(node.mtime * 1e9)
        attr.st_mtime_ns = attr.st_ctime_ns = attr.st_atime_ns = ns
        # cat, cp and friends size their buffers by st_blksize: one block per read call
        # (with direct I/O each call is one FUSE request).
        attr.st_blksize = min(max(self.reader.block_size, 128 * 1024), 4 << 20)
        if isinstance(node, Folder):
            attr.st_nlink = 2 + sum(1 for c in node.children.values() if c.is_dir)
            attr.st_size = 0
            attr.entry_timeout = STATIC_TIMEOUT if node.parent is None or node.parent is self.tree.root or node is self.tree.root else ENTRY_TIMEOUT
            # Listings change: let the kernel re-ask (answered from memory).
            attr.attr_timeout = 1.0
        else:
            assert isinstance(node, File)
            self._by_key.setdefault(node.key, node)
            attr.st_nlink = 1
            attr.st_size = node.apparent_size
            attr.st_blocks = (attr.st_size + 511) // 512
            attr.entry_timeout = ENTRY_TIMEOUT
            attr.attr_timeout = STATIC_TIMEOUT if node.size_known else 0.0
        return attr

    def _node(self, inode: int) -> Node:
        node = self.tree.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _folder(self, inode: int) -> Folder:
        node = self._node(inode)
        if not isinstance(node, Folder):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    # lookups -------------------------------------------------------------------------
    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        folder = self._folder(parent_inode)
        text = os.fsdecode(name)
        if text == ".":
            node: Node | None = folder
        elif text == "..":
            node = folder.parent or self.tree.root
        else:
            if self.catalog.top_folder_state(folder) is not None:
                await self.catalog.ensure_loaded(folder)
            node = self.tree.child(folder, text)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        self.tree.remember(node)
        return self._attrs(node)

    @_handler
    async def getattr(self, inode, ctx=None):
        return self._attrs(self._node(inode))


    async def forget(self, inode_list):
        try:
            for inode, count in inode_list:
                self.tree.forget(inode, count)
        except Exception:  # noqa: BLE001 - forget must never raise
            log.exception("forget failed")

    # directories -------------------------------------------------------------------
    @_handler
    async def opendir(self, inode, ctx):
        self._folder(inode)
        return inode

    @_handler
    async def readdir(self, fh, start_id, token):
        folder = self._folder(fh)
        if start_id == 0 and self.catalog.top_folder_state(folder) is not None:
            await self.catalog.ensure_loaded(folder)
        for child in list(folder.entries_after(start_id)):
            if not pyfuse3.readdir_reply(token, os.fsencode(child.name), self._attrs(child), child.cookie):
                return
            self.tree.remember(child)

    @_handler
    async def releasedir(self, fh):
        return None

    # files -------------------------------------------------------------------------------
    @_handler
    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if isinstance(node, Folder):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        assert isinstance(node, File)
        self._by_key.setdefault(node.key, node)
        if node.inline is not None:
            handle = self._next_inline
            self._next_inline -= 1
            self._inline_handles[handle] = node
        else:
            handle = await self.reader.open(Source(key=node.key, url=node.url, size=node.size),
                                            priority=reader_priority(ctx.pid))
        # Media never changes once created, so the kernel may keep pages across opens.
        # Large files skip the page cache: a cold read of a recording then costs one
        # copy into the reader's buffer instead of a page-cache fill plus a copy (the
        # biggest CPU cost of a cold read, measured in scripts/bench), and a 2 GB stream
        # does not evict the rest of the machine's cache. The block cache serves re-reads.
        size = self.reader.known_size(node.key) if node.inline is None else None
        direct = self.direct_io_above is not None and size is not None and size >= self.direct_io_above
        return pyfuse3.FileInfo(fh=handle, keep_cache=True, direct_io=direct)

    @_handler
    async def read(self, fh, off, size):
        inline = self._inline_handles.get(fh)
        if inline is not None:
            return inline.inline[off: off + size]  # type: ignore[index]
        return await self.reader.read(fh, off, size)

    @_handler
    async def release(self, fh):
        if self._inline_handles.pop(fh, None) is None:
            self.reader.close(fh)






    # extended attributes ---------------------------------------------------------------
    def _xattrs(self, node: Node) -> dict[str, str]:
        values = dict(node.xattrs)
        if node.inode == ROOT_INODE:
            values[CONTROL_XATTR_PID] = str(os.getpid())
        elif isinstance(node, File):
            if node.size_known:
                values["user.rc.size"] = str(node.apparent_size)
        return {k: v for k, v in values.items() if v != ""}

    @_handler
    async def getxattr(self, inode, name, ctx):
        value = self._xattrs(self._node(inode)).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode("utf-8", errors="replace")

    @_handler
    async def listxattr(self, inode, ctx):
        return [k.encode() for k in sorted(self._xattrs(self._node(inode)))]



    # writes --------------------------------------------------------------------------
    async def _read_only(self, *args: Any) -> None:
        """Every changing request: the media tree is read-only (the outbox comes later)."""
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = create = mkdir = unlink = rmdir = rename = setxattr = removexattr = _read_only

    # filesystem ------------------------------------------------------------------------
    @_handler
    async def statfs(self, ctx):
        # O(1) and never the network: desktops call this constantly.
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = 0
        st.f_bfree = st.f_bavail = 0
        st.f_files = len(self.tree.nodes)
        st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st
