"""What every top-level folder owner answers, and the defaults for a folder that only reads.

The FUSE adapter (`rcfs.fs`) finds the owner of a node (the top-level folder it lives
under) and hands it the request; an owner that does not allow a request answers with a
`Refused` carrying the errno and, in words, why. Owners never see pyfuse3 types, so
each can be driven from a test without a mount.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import Callable

from ..tree import File, Folder, Node, Tree


class Refused(Exception):
    """A request this folder does not allow or cannot carry out; `errno` is what the
    program sees, the message is what the log says (in words a user understands)."""

    def __init__(self, code: int, why: str = "") -> None:
        super().__init__(why or errno.errorcode.get(code, str(code)))
        self.errno = code


@dataclasses.dataclass
class Opened:
    """An open file as the owner sees it; the adapter maps `handle` to a kernel fh."""

    handle: int
    direct_io: bool = False
    keep_cache: bool = True


class FolderOwner:
    """A top-level folder and everything under it. Defaults: list and read, change nothing."""

    name: str = ""
    read_only_reason = "is read-only"
    # True where a file's attributes follow from its size and mtime alone (immutable
    # media): the adapter may then reuse what it gave the kernel for the file last time
    # while both are unchanged (rcfs.fs: a warm `ls -l` builds no attributes anew).
    # Owners whose files change in other ways (outbox, texts, greetings) leave it False.
    stable_file_attrs: bool = False

    def __init__(self, tree: Tree, folder: Folder) -> None:
        self.tree = tree
        self.folder = folder
        # Set by rcfs.push: trusted(t) is True while the push channel is healthy and its
        # subscription was active at trio time t, when a listing started (no TTL needed).
        self.trusted: Callable[[float | None], bool] = lambda started: False
        # Set by rcfs.push: called when `push_filters` changed (a folder of another
        # extension was first listed), so the subscription is updated.
        self.push_changed: Callable[[], None] = lambda: None
        # Set by the mount: called with (folder, names added, names removed) when a sync
        # changed a listing, so the adapter can tell the kernel (rcfs.fs.folder_changed).
        self.on_change: Callable[[Folder, set[str], set[str]], None] | None = None

    # push (rcfs.push) -----------------------------------------------------------------
    def push_filters(self) -> tuple[str, ...]:
        """The event filters this folder needs in the mount's one subscription (they may
        change: then the owner calls `push_changed`)."""
        return ()

    def wants(self, notice) -> bool:
        """Whether a push notice (rcfs.push.Notice) may change this folder."""
        return False

    async def pushed(self, notices: list) -> None:
        """Bring the folder in step after `notices` (only those `wants` took)."""

    async def resync(self) -> None:
        """One incremental sync, if the folder was listed: events may have been missed."""

    # listing ------------------------------------------------------------------------
    async def refresh(self, folder: Folder) -> None:
        """Make the listing of `folder` current enough to answer lookup/readdir."""

    async def lookup(self, folder: Folder, name: str) -> Node | None:
        await self.refresh(folder)
        return self.tree.child(folder, name)

    def xattrs(self, node: Node) -> dict[str, str]:
        values = dict(node.xattrs)
        if isinstance(node, File) and node.size_known:
            values["user.rc.size"] = str(node.apparent_size)
        return values

    def presented_size(self, node: File) -> int:
        """The st_size the kernel is given for `node` (its exact size where known)."""
        return node.apparent_size

    def attr_timeout(self, node: Node) -> float | None:
        """Override the adapter's attribute timeout for `node` (None: the default)."""
        return None

    # files -----------------------------------------------------------------------------
    async def open(self, node: File, flags: int, pid: int) -> Opened:
        raise Refused(errno.EACCES, f"/{self.name} {self.read_only_reason}")

    async def read(self, handle: int, offset: int, length: int) -> bytes:
        raise Refused(errno.EBADF)

    async def write(self, handle: int, offset: int, data: bytes) -> int:
        raise Refused(errno.EBADF)

    async def flush(self, handle: int) -> None:
        return None

    async def fsync(self, handle: int) -> None:
        return None

    async def release(self, handle: int) -> None:
        return None

    # changes -----------------------------------------------------------------------------
    def refuse(self, what: str) -> Refused:
        return Refused(errno.EACCES, f"{what}: /{self.name} {self.read_only_reason}")

    async def create(self, folder: Folder, name: str, flags: int, pid: int) -> tuple[File, Opened]:
        raise self.refuse(f"cannot create {name!r}")

    async def mkdir(self, folder: Folder, name: str) -> Folder:
        raise self.refuse(f"cannot make folder {name!r}")

    async def rmdir(self, folder: Folder, name: str) -> None:
        raise self.refuse(f"cannot remove folder {name!r}")

    async def unlink(self, folder: Folder, name: str) -> None:
        raise self.refuse(f"cannot remove {name!r}")

    async def rename(self, folder: Folder, name: str, new_folder: Folder, new_name: str) -> None:
        raise self.refuse(f"cannot rename {name!r}")

    async def truncate(self, node: File, size: int) -> None:
        raise self.refuse(f"cannot change {node.name!r}")

    async def touch(self, node: Node, mtime: float | None) -> None:
        """chmod/chown/utime: `mtime` is the new modification time when one was given."""
        raise self.refuse(f"cannot change the attributes of {node.name!r}")

    async def setxattr(self, node: Node, name: str, value: bytes) -> None:
        raise Refused(errno.ENOTSUP, f"/{self.name}: extended attributes are read-only")


class RootOwner(FolderOwner):
    """The mount's root: the fixed top-level folders, nothing to add or remove."""

    name = ""
    read_only_reason = "has a fixed set of folders"
