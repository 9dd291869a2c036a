"""The pyfuse3 adapter: translates kernel requests into calls on the folder owners, and
their errors into errno. It decides nothing on its own.

Each node belongs to the owner of the nearest folder above it (or itself) that has one
(`rcfs.folders`): /faxes, /voicemail and /mms to a message folder, /recordings to the
recordings folder, /outbox to the outbox, and at any depth the same for the mailboxes
under /company/users/<ext>/ (`rcfs.mailbox`), whose owners come and go as extensions
are opened and deleted (`add_owner` / `remove_owner`). The adapter finds that owner and
hands it the request; "what happens when I write into /outbox" is answered in
`rcfs/folders/outbox.py`.

Every handler goes through `_handler`, which turns any exception into a FUSEError: an
exception escaping a pyfuse3 handler would end the main loop and leave the mountpoint
dead ("Transport endpoint is not connected").
"""

from __future__ import annotations

import bisect
import errno
import functools
import itertools
import logging
import os
import stat
import threading
from typing import Any, Callable

import pyfuse3
import trio

from . import names
from .api.client import Priority
from .api.errors import ApiError, AuthError, NotFound, RateLimited, Rejected
from .folders.base import FolderOwner, Opened, Refused
from .state import StateStore
from .tree import ROOT_INODE, File, Folder, Node, Tree

log = logging.getLogger(__name__)

# Long timeouts are safe for immutable media; listings change, so their entries expire sooner.
STATIC_TIMEOUT = 300.0
ENTRY_TIMEOUT = 10.0
PROVISIONAL_ATTR_TIMEOUT = ENTRY_TIMEOUT  # a provisional size (see _attrs)
CONTROL_XATTR_PID = "user.rc.pid"
XATTR_VALUE_MAX = 4096  # bytes; values from the API are capped so no record can flood a reader
CONTROL_XATTR_MAX = 65536  # XATTR_SIZE_MAX: the root's control values (status report)


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


# Programs that list xattrs only to mark files with an ACL or a security context.
_ACL_ONLY_LISTERS = frozenset(("ls", "dir", "vdir"))


def _asks_only_for_acls(pid: int) -> bool:
    """Whether the process `pid` is `ls` (by /proc/PID/comm; cut at 15 characters, which
    cannot matter for these names)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as fh:
            return fh.read(64).strip().decode("utf-8", "replace") in _ACL_ONLY_LISTERS
    except OSError:
        return False  # gone already, or not visible: answer as to anyone


def errno_for(exc: BaseException) -> int:
    """The errno a reader sees for a domain error."""
    if isinstance(exc, Refused):
        return exc.errno
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
        if self.before_first_request is not None:
            hook, self.before_first_request = self.before_first_request, None
            hook()
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Refused as exc:
            # In the words of the program that called: flush is what close() does.
            call = {"flush": "close", "create": "open"}.get(fn.__name__, fn.__name__)
            log.warning("%s [%s at %s]", exc, errno.errorcode.get(exc.errno, exc.errno), call)
            raise pyfuse3.FUSEError(exc.errno) from None
        except ApiError as exc:
            code = errno_for(exc)
            log.warning("%s failed: %s (%s)", fn.__name__, exc, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - the mount must survive any bug
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class _Listing:
    """One open directory: a snapshot taken when reading starts, so that a folder of
    100,000 entries is listed in O(n log n) overall, not O(n) per READDIR call."""

    __slots__ = ("nodes", "cookies")

    def __init__(self, folder: Folder) -> None:
        self.nodes = list(folder.children.values())  # cookie order (see Folder.entries_after)
        self.cookies = [n.cookie for n in self.nodes]


class Operations(pyfuse3.Operations):
    """Kernel requests in, owner calls out."""

    def __init__(self, tree: Tree, owners: dict[str, FolderOwner], state: StateStore, *,
                 root_owner: FolderOwner | None = None,
                 control_xattrs: Callable[[], dict[str, str | Callable[[], str]]] | None = None,
                 space: Callable[[], tuple[int, int, int]] | None = None,
                 block_size: int = 1 << 20) -> None:
        super().__init__()
        self.tree = tree
        self.state = state
        self.block_size = block_size
        # cat, cp and friends size their buffers by st_blksize: one block per read call
        # (with direct I/O each call is one FUSE request).
        self._blksize = min(max(block_size, 128 * 1024), 4 << 20)
        self.owners = owners
        self._owner_by_inode = {owner.folder.inode: owner for owner in owners.values()}
        self.root_owner = root_owner or FolderOwner(tree, tree.root)
        self.control_xattrs = control_xattrs or (lambda: {})
        self.space = space  # (total, free, available) bytes where written files go
        self._handles: dict[int, tuple[FolderOwner, int]] = {}
        self._dirs: dict[int, tuple[int, _Listing | None]] = {}  # fh -> (inode, snapshot)
        # inode -> (node, size, mtime, attributes) for files of owners with stable_file_attrs:
        # building the attributes was half of a warm `ls -l`'s cost in rcfs. Entries go
        # when the kernel forgets the inode; the node/size/mtime check keeps a stale one
        # from ever being used.
        self._attr_memo: dict[int, tuple[File, int | None, float, pyfuse3.EntryAttributes]] = {}
        self._next_fh = itertools.count(1)
        self.initialized = trio.Event()  # set once the kernel's INIT request arrived
        # Run once, before the first request after INIT is answered: the kernel holds every
        # request until it has processed INIT's reply, so mount settings the kernel sets
        # from that reply (the read-ahead) can be changed here for good, before any file
        # is opened (a file keeps the read-ahead it was opened with). Must not raise.
        self.before_first_request: Callable[[], None] | None = None
        # Announcing new entries to inotify watchers (see `folder_changed`): the mount's
        # resolved path (set by rcfs.mount; None: no announcements), the names being
        # announced, the announcing threads' kernel ids, and the folders whose mode shows
        # the write bit meanwhile (the kernel checks it before asking us).
        self.mount_target: str | None = None
        self._announcing: set[tuple[int, str]] = set()
        self._announcer_tids: set[int] = set()
        self._announce_folders: dict[int, int] = {}  # folder inode -> announcements under way

    def init(self) -> None:
        self.initialized.set()

    # owners ------------------------------------------------------------------------------
    def owner_of(self, node: Node) -> FolderOwner:
        """The owner of the nearest folder at or above `node` that has one."""
        at: Node | None = node
        while at is not None and at is not self.tree.root:
            owner = self._owner_by_inode.get(at.inode)
            if owner is not None:
                return owner
            at = at.parent
        return self.root_owner

    def add_owner(self, owner: FolderOwner) -> None:
        """`owner` answers for its folder and what is below it (a mailbox opened)."""
        self._owner_by_inode[owner.folder.inode] = owner

    def remove_owner(self, owner: FolderOwner) -> None:
        if self._owner_by_inode.get(owner.folder.inode) is owner:
            del self._owner_by_inode[owner.folder.inode]

    # facts learned by the reader ---------------------------------------------------------
    def size_learned(self, key: str, size: int) -> None:
        """Reader callback: the exact size of an object is now known."""
        if names.valid_size(size) is None:
            log.warning("ignoring an impossible size %r for %s", size, key)
            return
        self.state.learn_size(key, size)
        node = self.tree.find_key(key)
        if isinstance(node, File):
            changed = node.size != size
            node.size = size
            if changed:
                self._invalidate_attrs(node)

    def content_type_learned(self, key: str, content_type: str) -> None:
        """Reader callback: a download told the real type (recordings are named by it)."""
        node = self.tree.find_key(key)
        if isinstance(node, File):
            parent, old_name = node.parent, node.name
            self.owner_of(node).content_type_learned(node, content_type)
            if parent is not None and node.name != old_name:
                self._invalidate_entry(parent, old_name)

    # kernel caches ---------------------------------------------------------------------
    def _kernel_knows(self, node: Node) -> bool:
        return self.initialized.is_set() and (node.inode == ROOT_INODE or self.tree.lookups.get(node.inode, 0) > 0)

    def _invalidate_attrs(self, node: Node) -> None:
        """Drop the kernel's cached attributes of `node` (a learned size replaces the
        provisional one at once, not only at the next getattr).

        attr_only: no page-cache invalidation, which could wait on a page locked by a
        read this very loop has to answer; without writeback caching (not enabled here)
        pyfuse3 documents the call as non-blocking, so it is safe from the trio loop and
        from inside a handler.
        """
        if not self._kernel_knows(node):
            return
        try:
            pyfuse3.invalidate_inode(node.inode, attr_only=True)
        except OSError as exc:  # ENOENT: the kernel forgot it meanwhile
            log.debug("invalidate_inode(%s): %s", node.name, exc)

    def _invalidate_entry(self, folder: Folder, name: str) -> None:
        """Tell the kernel `name` in `folder` changed (a recording renamed by its learned
        type). Asynchronous (pyfuse3's own thread): the kernel takes the directory's lock
        for this, which a request we are serving may hold, so a synchronous call could
        deadlock the loop. The kernel also drops the folder's cached attributes and listing,
        so the next `ls` (or a file manager's reload) shows the new name; the old one stays
        a lookup alias, so a window still showing it opens the file. Measured on Linux
        6.18: FUSE invalidations raise no inotify event, so an open window does not
        refresh by itself, with or without `deleted=` (which would also zero the live
        inode's link count), hence the plain form."""
        if not self._kernel_knows(folder):
            return
        pyfuse3.invalidate_entry_async(folder.inode, os.fsencode(name), ignore_enoent=True)

    def folder_changed(self, folder: Folder, added: set[str], removed: set[str]) -> None:
        """An owner's sync changed `folder` (a push event): drop what the kernel cached
        of those names and of the folder, so the next `ls` and lookup ask again; then
        announce the new names to inotify watchers (an open file manager).

        Why the announcement: the kernel raises inotify events only for system calls
        made on the mount; FUSE invalidations raise none (measured on Linux 6.18), so an
        open GNOME Files window would show a new voicemail only after a reload. So rcfs
        makes the call itself: a worker thread (never the FUSE loop, which must stay free
        to answer it) runs mknod(2) (mkdir(2) for a folder) on each new name. rcfs
        answers that thread's LOOKUP "no such entry" and its MKNOD with the entry that
        exists, so the kernel instantiates it and raises IN_CREATE, exactly as for a file
        created there. Nothing is created anywhere and no API request is made; the
        folder shows the write bit while its announcement runs, because the kernel
        checks it before asking us (default_permissions). A name some process looked up
        first is already known to the kernel: it answers EEXIST itself and raises no
        event (that process saw the file anyway)."""
        for name in sorted(added | removed):
            self._invalidate_entry(folder, name)
        self._invalidate_attrs(folder)
        fresh = sorted(n for n in added if (folder.inode, n) not in self._announcing
                       and isinstance(self.tree.child(folder, n), (File, Folder)))
        if fresh and self.mount_target is not None and self._kernel_knows(folder):
            self._announcing.update((folder.inode, n) for n in fresh)
            trio.lowlevel.spawn_system_task(self._announce, folder, fresh, name="rcfs announce")

    def _mount_path(self, node: Node) -> str:
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        assert self.mount_target is not None
        return os.path.join(self.mount_target, *reversed(parts))

    async def _announce(self, folder: Folder, names: list[str]) -> None:
        path = self._mount_path(folder)
        kinds = [isinstance(self.tree.child(folder, n), Folder) for n in names]
        self._announce_folders[folder.inode] = self._announce_folders.get(folder.inode, 0) + 1
        self._invalidate_attrs(folder)
        try:
            with trio.move_on_after(30):  # bounded: a wedged kernel call is abandoned
                done = await trio.to_thread.run_sync(self._announce_in_thread, path, names, kinds,
                                                     abandon_on_cancel=True)
                log.debug("announced %d of %d new name(s) in %s to inotify", done, len(names), folder.name)
        except Exception:  # noqa: BLE001 - an announcement is a courtesy, never a failure
            log.exception("announcing new entries of %s failed", folder.name)
        finally:
            for name in names:
                self._announcing.discard((folder.inode, name))
            left = self._announce_folders.get(folder.inode, 1) - 1
            if left:
                self._announce_folders[folder.inode] = left
            else:
                self._announce_folders.pop(folder.inode, None)
            self._invalidate_attrs(folder)

    def _announce_in_thread(self, path: str, names: list[str], kinds: list[bool]) -> int:
        tid = threading.get_native_id()
        self._announcer_tids.add(tid)
        done = 0
        try:
            for name, is_dir in zip(names, kinds):
                target = os.path.join(path, name)
                try:
                    if is_dir:
                        os.mkdir(target, 0o500)
                    else:
                        os.mknod(target, stat.S_IFREG | 0o400)
                    done += 1
                except OSError as exc:  # EEXIST: the kernel knew the name already
                    log.debug("announcing %s: %s", name, exc.strerror)
        finally:
            self._announcer_tids.discard(tid)
        return done

    def _announced(self, folder: Folder, name: str, ctx) -> Node | None:
        """The entry to answer an announcing thread's MKNOD/MKDIR with, or None."""
        text = os.fsdecode(name)
        if (folder.inode, text) not in self._announcing or getattr(ctx, "pid", None) not in self._announcer_tids:
            return None
        return self.tree.child(folder, text)

    # attributes ----------------------------------------------------------------------
    def _stable_file_attrs(self, node: File, owner: FolderOwner) -> pyfuse3.EntryAttributes:
        """`_attrs` of a file whose owner says they follow from size and mtime alone:
        built once, then reused while the node, its size and its mtime are the same."""
        memo = self._attr_memo.get(node.inode)
        if memo is not None and memo[0] is node and memo[1] == node.size and memo[2] == node.mtime:
            return memo[3]
        attrs = self._attrs(node, owner)
        self._attr_memo[node.inode] = (node, node.size, node.mtime, attrs)
        return attrs

    def _attrs(self, node: Node, owner: FolderOwner | None = None) -> pyfuse3.EntryAttributes:
        """`owner`: the node's owner when the caller knows it (readdir: one for all).

        Called once per entry of every READDIR (a warm `ls -l` of 13,000 faxes spends most
        of rcfs' time here), hence written plainly, with the constant parts computed once."""
        owner = owner or self.owner_of(node)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.st_mode = self.tree.mode(node)
        attr.st_uid = self.tree.uid
        attr.st_gid = self.tree.gid
        attr.st_mtime_ns = attr.st_ctime_ns = attr.st_atime_ns = int(node.mtime * 1e9)
        attr.st_blksize = self._blksize
        if node.is_dir:
            attr.st_nlink = 2 + sum(1 for c in node.children.values() if c.is_dir)
            attr.st_size = 0
            top = node.parent is None or node.parent is self.tree.root
            attr.entry_timeout = STATIC_TIMEOUT if top else ENTRY_TIMEOUT
            # Listings change: let the kernel re-ask (answered from memory).
            attr.attr_timeout = 1.0
            if node.inode in self._announce_folders:  # see folder_changed
                attr.st_mode |= stat.S_IWUSR
                attr.attr_timeout = 0.0
        else:
            attr.st_nlink = 1
            attr.st_size = size = owner.presented_size(node)
            attr.st_blocks = (size + 511) // 512
            attr.entry_timeout = ENTRY_TIMEOUT
            # A provisional size is replaced by invalidating the kernel's copy the moment
            # the real one is learned (size_learned), so it need not expire at once: with
            # a timeout of 0, every `ls -l` paid one GETATTR per such file (a third of a
            # big fax folder: 4x slower than tmpfs). ENTRY_TIMEOUT bounds how long a lost
            # invalidation could show it.
            attr.attr_timeout = STATIC_TIMEOUT if node.size_known else PROVISIONAL_ATTR_TIMEOUT
        override = owner.attr_timeout(node)
        if override is not None:
            attr.attr_timeout = override
            attr.entry_timeout = min(attr.entry_timeout, max(override, 0.0))
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

    def _file(self, inode: int) -> File:
        node = self._node(inode)
        if isinstance(node, Folder):
            raise pyfuse3.FUSEError(errno.EISDIR)
        assert isinstance(node, File)
        return node

    def _owner_for_child(self, folder: Folder) -> FolderOwner:
        """The owner of what is (or would be) inside `folder`."""
        if folder is self.tree.root:
            return self.root_owner
        return self.owner_of(folder)

    def _new_handle(self, owner: FolderOwner, opened: Opened) -> pyfuse3.FileInfo:
        fh = next(self._next_fh)
        self._handles[fh] = (owner, opened.handle)
        return pyfuse3.FileInfo(fh=fh, keep_cache=opened.keep_cache, direct_io=opened.direct_io)

    def _handle(self, fh: int) -> tuple[FolderOwner, int]:
        try:
            return self._handles[fh]
        except KeyError:
            raise pyfuse3.FUSEError(errno.EBADF) from None

    # lookups -------------------------------------------------------------------------
    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        folder = self._folder(parent_inode)
        text = os.fsdecode(name)
        if text == ".":
            node: Node | None = folder
        elif text == "..":
            node = folder.parent or self.tree.root
        elif (folder.inode, text) in self._announcing and getattr(ctx, "pid", None) in self._announcer_tids:
            node = None  # the announcing thread's own lookup: see folder_changed
        else:
            node = await self._owner_for_child(folder).lookup(folder, text)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        self.tree.remember(node)
        return self._attrs(node)

    @_handler
    async def getattr(self, inode, ctx=None):
        return self._attrs(self._node(inode))

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        owner = self.owner_of(node)
        if fields.update_size:
            if not isinstance(node, File):
                raise pyfuse3.FUSEError(errno.EISDIR)
            await owner.truncate(node, attr.st_size)
        if (fields.update_mode or fields.update_uid or fields.update_gid
                or fields.update_atime or fields.update_mtime):
            await owner.touch(node, attr.st_mtime_ns / 1e9 if fields.update_mtime else None)
        return self._attrs(node)

    async def forget(self, inode_list):
        try:
            for inode, count in inode_list:
                self.tree.forget(inode, count)
                if inode not in self.tree.lookups:
                    self._attr_memo.pop(inode, None)
        except Exception:  # noqa: BLE001 - forget must never raise
            log.exception("forget failed")

    # directories -------------------------------------------------------------------
    @_handler
    async def opendir(self, inode, ctx):
        self._folder(inode)
        fh = next(self._next_fh)
        self._dirs[fh] = (inode, None)
        return fh

    @_handler
    async def readdir(self, fh, start_id, token):
        inode, listing = self._dirs.get(fh, (fh, None))
        folder = self._folder(inode)
        if start_id == 0 or listing is None:
            await self._owner_for_child(folder).refresh(folder)
            listing = _Listing(folder)
            self._dirs[fh] = (inode, listing)
        # Every file in the folder has the folder's owner: found once, not per entry (a
        # subfolder may have one of its own: a mailbox under /company, a top folder).
        owner = self._owner_for_child(folder)
        nodes, children, remember = listing.nodes, folder.children, self.tree.remember
        stable = owner.stable_file_attrs
        # By index from the bisected cookie: a READDIR holds about 30 entries, so skipping
        # to the start by iteration (islice) made one `ls` of n entries cost O(n^2 / 30).
        for i in range(bisect.bisect_right(listing.cookies, start_id), len(nodes)):
            child = nodes[i]
            if child.parent is not folder or children.get(child.name) is not child:
                continue  # removed (or renamed) since the snapshot
            if stable and not child.is_dir:
                attrs = self._stable_file_attrs(child, owner)
            else:
                attrs = self._attrs(child, None if child.is_dir else owner)
            if not pyfuse3.readdir_reply(token, os.fsencode(child.name), attrs, child.cookie):
                return
            remember(child)

    @_handler
    async def releasedir(self, fh):
        self._dirs.pop(fh, None)

    @_handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        folder = self._folder(parent_inode)
        node = self._announced(folder, name, ctx)
        if not isinstance(node, File):
            raise pyfuse3.FUSEError(errno.ENOSYS)  # as before: no special files here
        self.tree.remember(node)
        return self._attrs(node)

    @_handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        folder = self._folder(parent_inode)
        announced = self._announced(folder, name, ctx)
        if isinstance(announced, Folder):
            self.tree.remember(announced)
            return self._attrs(announced)
        node = await self._owner_for_child(folder).mkdir(folder, os.fsdecode(name))
        self.tree.remember(node)
        return self._attrs(node)

    @_handler
    async def rmdir(self, parent_inode, name, ctx):
        folder = self._folder(parent_inode)
        await self._owner_for_child(folder).rmdir(folder, os.fsdecode(name))

    @_handler
    async def unlink(self, parent_inode, name, ctx):
        folder = self._folder(parent_inode)
        await self._owner_for_child(folder).unlink(folder, os.fsdecode(name))

    @_handler
    async def rename(self, parent_old, name_old, parent_new, name_new, flags, ctx):
        old = self._folder(parent_old)
        new = self._folder(parent_new)
        owner = self._owner_for_child(old)
        if self._owner_for_child(new) is not owner:
            raise pyfuse3.FUSEError(errno.EXDEV)  # mv falls back to copy + unlink
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)  # RENAME_EXCHANGE / NOREPLACE: not offered
        await owner.rename(old, os.fsdecode(name_old), new, os.fsdecode(name_new))

    # files -------------------------------------------------------------------------------
    @_handler
    async def open(self, inode, flags, ctx):
        node = self._file(inode)
        owner = self.owner_of(node)
        return self._new_handle(owner, await owner.open(node, flags, ctx.pid))

    @_handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        folder = self._folder(parent_inode)
        owner = self._owner_for_child(folder)
        node, opened = await owner.create(folder, os.fsdecode(name), flags, ctx.pid)
        self.tree.remember(node)
        return self._new_handle(owner, opened), self._attrs(node)

    @_handler
    async def read(self, fh, off, size):
        owner, handle = self._handle(fh)
        return await owner.read(handle, off, size)

    @_handler
    async def write(self, fh, off, buf):
        owner, handle = self._handle(fh)
        return await owner.write(handle, off, buf)

    @_handler
    async def flush(self, fh):
        owner, handle = self._handle(fh)
        await owner.flush(handle)

    @_handler
    async def fsync(self, fh, datasync):
        owner, handle = self._handle(fh)
        await owner.fsync(handle)

    @_handler
    async def release(self, fh):
        owner, handle = self._handles.pop(fh, (None, 0))
        if owner is not None:
            await owner.release(handle)

    # extended attributes ---------------------------------------------------------------
    def _xattrs(self, node: Node) -> dict[str, str | Callable[[], str]]:
        if node.inode == ROOT_INODE:
            # A control value may be a callable: computed only when that name is read.
            values = {CONTROL_XATTR_PID: str(os.getpid()), **self.control_xattrs()}
        else:
            values = self.owner_of(node).xattrs(node)
        return {k: v for k, v in values.items() if v != ""}

    @_handler
    async def getxattr(self, inode, name, ctx):
        if not name.startswith(b"user."):
            # `ls -l` asks every file for security.selinux and system.posix_acl_access.
            # ENOTSUP ("this filesystem has no such attributes at all") makes coreutils
            # remember the device and stop asking; ENODATA ("this file has none") would
            # cost two round trips per file, forever: the kernel caches neither answer
            # (design/FUSE-SPEED.md). Never ENOSYS: the kernel would then refuse every
            # getxattr, user.rc.* included, without asking us.
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        value = self._xattrs(self._node(inode)).get(os.fsdecode(name))
        if callable(value):
            value = value()
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # a user.rc.* name this node lacks
        # The root's control values are ours (the status report may exceed the cap meant
        # for values taken from the API); the kernel's own limit is 64 KiB.
        cap = CONTROL_XATTR_MAX if inode == ROOT_INODE else XATTR_VALUE_MAX
        return names.safe_value(value).encode("utf-8", errors="replace")[:cap]

    @_handler
    async def listxattr(self, inode, ctx):
        if _asks_only_for_acls(ctx.pid):
            # coreutils >= 9.4 lists every file's xattrs during `ls -l`, only to find
            # ACL and SELinux names, which rcfs never has; with more than 152 bytes of
            # names it even asks three times per file. To `ls` alone the answer is
            # "not supported": it then remembers the device and asks nothing more,
            # which shows exactly what the list would have shown (no `+`, no context).
            # getfattr, cp -a, rsync -X and tar --xattrs get the names.
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        return [k.encode() for k in sorted(self._xattrs(self._node(inode)))]

    @_handler
    async def setxattr(self, inode, name, value, ctx):
        node = self._node(inode)
        await self.owner_of(node).setxattr(node, os.fsdecode(name), value)

    @_handler
    async def removexattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    # filesystem ------------------------------------------------------------------------
    @_handler
    async def statfs(self, ctx):
        # O(1) and never the network: desktops call this constantly.
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = st.f_bfree = st.f_bavail = 0
        if self.space is not None:
            # File managers check the target's free space before copying into /outbox.
            total, free, avail = self.space()
            st.f_blocks, st.f_bfree, st.f_bavail = total // 4096, free // 4096, avail // 4096
        st.f_files = len(self.tree.nodes)
        st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st
