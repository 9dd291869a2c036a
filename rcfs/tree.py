"""The filesystem model: folders, files, inode numbers and readdir cookies.

Synchronous on purpose: no method awaits, so under trio every mutation is atomic with
respect to FUSE handlers (a `lookup` can never see a half-updated folder).

Inode numbers are derived from a stable key (e.g. ``msg:123:456``), so the same
message has the same inode across remounts. Readdir cookies are per-folder insertion
sequence numbers: stable while entries come and go between two READDIR calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import stat as stat_mod
import time
from typing import Iterator

ROOT_INODE = 1


def stable_inode(key: str, salt: int = 0) -> int:
    """A 63-bit inode number from a key; never 0 or ROOT_INODE."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big") & ((1 << 63) - 1)
    return value if value > ROOT_INODE else value + 2


@dataclasses.dataclass(eq=False)
class Node:
    """Something with a name in a folder."""

    key: str
    name: str
    mtime: float
    inode: int = 0
    parent: "Folder | None" = None
    cookie: int = 0  # position in the parent's insertion order (readdir offset)
    xattrs: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return False


@dataclasses.dataclass(eq=False)
class File(Node):
    """A read-only file whose bytes live at `url` on the media host.

    `size` is None until known (recordings and attachments without `size`): see
    `rcfs.fs` for how that is presented to the kernel.
    """

    url: str = ""
    size: int | None = None
    content_type: str | None = None
    writable: bool = False  # the owner accepts writes (outbox items being written)

    @property
    def size_known(self) -> bool:
        return self.size is not None

    @property
    def apparent_size(self) -> int:
        return self.size or 0


@dataclasses.dataclass(eq=False)
class Folder(Node):
    """A directory. Children are kept in insertion order; `cookie` numbers never reuse."""

    children: dict[str, Node] = dataclasses.field(default_factory=dict)
    # Old names of renamed children: still found by lookup (never listed), so a `cp -r`
    # that listed the folder before the rename keeps working.
    aliases: dict[str, Node] = dataclasses.field(default_factory=dict)
    next_cookie: int = 1
    writable: bool = False

    @property
    def is_dir(self) -> bool:
        return True

    def entries_after(self, cookie: int) -> Iterator[Node]:
        """Children whose cookie is greater than `cookie`, in cookie order."""
        # dicts keep insertion order and cookies grow with insertion, so this is sorted.
        for child in self.children.values():
            if child.cookie > cookie:
                yield child


class Tree:
    """The inode table plus the folder hierarchy.

    Nodes removed from a folder stay in the inode table while the kernel still holds
    a lookup reference to them (see `forget`), so open files keep working.
    """

    def __init__(self, *, uid: int, gid: int) -> None:
        self.uid = uid
        self.gid = gid
        self.mount_time = time.time()
        self.root = Folder(key="root", name="", mtime=self.mount_time, inode=ROOT_INODE)
        self.nodes: dict[int, Node] = {ROOT_INODE: self.root}
        self.lookups: dict[int, int] = {}

    # building ----------------------------------------------------------------
    def _assign_inode(self, node: Node) -> None:
        salt = 0
        while True:
            ino = stable_inode(node.key, salt)
            other = self.nodes.get(ino)
            if other is None or other is node or other.key == node.key:
                node.inode = ino
                return
            salt += 1  # a 63-bit collision: astronomically rare, but stay correct

    def add(self, folder: Folder, node: Node) -> Node:
        """Put `node` into `folder` (replacing a node of the same key and name)."""
        existing = folder.children.get(node.name)
        if existing is not None and existing.key == node.key:
            return existing
        if existing is not None:
            raise ValueError(f"name collision in {folder.name!r}: {node.name!r}")
        self._assign_inode(node)
        old = self.nodes.get(node.inode)
        if old is not None and old is not node and old.key == node.key:
            # Same object re-listed after it had been removed but not yet forgotten.
            node = old
        node.parent = folder
        node.cookie = folder.next_cookie
        folder.next_cookie += 1
        folder.children[node.name] = node
        self.nodes[node.inode] = node
        return node

    def remove(self, folder: Folder, name: str) -> Node | None:
        """Take `name` out of `folder`; the inode lives on until forgotten."""
        node = folder.children.pop(name, None)
        if node is None:
            return None
        for alias, target in list(folder.aliases.items()):
            if target is node:
                del folder.aliases[alias]
        if self.lookups.get(node.inode, 0) == 0:
            self._drop(node)
        return node

    def _drop(self, node: Node) -> None:
        if node.inode == ROOT_INODE:
            return
        if node.parent is not None and node.parent.children.get(node.name) is node:
            return  # still linked
        self.nodes.pop(node.inode, None)
        if isinstance(node, Folder):
            for child in list(node.children.values()):
                node.children.pop(child.name, None)
                if self.lookups.get(child.inode, 0) == 0:
                    self._drop(child)

    def mkdir(self, parent: Folder, name: str, key: str, *, mtime: float | None = None,
              writable: bool = False) -> Folder:
        existing = parent.children.get(name)
        if isinstance(existing, Folder):
            return existing
        folder = Folder(key=key, name=name, mtime=mtime or self.mount_time, writable=writable)
        return self.add(parent, folder)  # type: ignore[return-value]

    # queries -------------------------------------------------------------------
    def get(self, inode: int) -> Node | None:
        return self.nodes.get(inode)

    def find_key(self, key: str) -> Node | None:
        """The live node with this key, if any (inodes derive from keys: no index needed,
        so a node a folder owner replaced is never found in place of the live one)."""
        salt = 0
        while True:
            node = self.nodes.get(stable_inode(key, salt))
            if node is None or node.key == key:
                return node
            salt += 1

    def child(self, folder: Folder, name: str) -> Node | None:
        """The child called `name`, or a child that was called `name` before a rename."""
        node = folder.children.get(name)
        if node is None:
            node = folder.aliases.get(name)
            if node is not None and node.parent is not folder:
                return None
        return node

    def rename(self, folder: Folder, node: Node, new_name: str) -> None:
        """Give `node` a new name, keeping inode and the old name as a lookup alias."""
        if folder.children.get(node.name) is not node or new_name == node.name:
            return
        del folder.children[node.name]
        folder.aliases[node.name] = node
        node.name = new_name
        node.cookie = folder.next_cookie
        folder.next_cookie += 1
        folder.children[new_name] = node

    def move(self, node: Node, new_folder: Folder, new_name: str) -> None:
        """rename(2): `node` (same inode) is now `new_name` in `new_folder`."""
        old = node.parent
        if old is not None and old.children.get(node.name) is node:
            del old.children[node.name]
        node.name = new_name
        node.parent = new_folder
        node.cookie = new_folder.next_cookie
        new_folder.next_cookie += 1
        new_folder.children[new_name] = node

    # kernel reference counting --------------------------------------------------
    def remember(self, node: Node) -> None:
        """The kernel learned about `node` (lookup / readdirplus entry)."""
        if node.inode != ROOT_INODE:
            self.lookups[node.inode] = self.lookups.get(node.inode, 0) + 1

    def forget(self, inode: int, count: int) -> None:
        remaining = self.lookups.get(inode, 0) - count
        if remaining > 0:
            self.lookups[inode] = remaining
            return
        self.lookups.pop(inode, None)
        node = self.nodes.get(inode)
        if node is not None and (node.parent is None or node.parent.children.get(node.name) is not node):
            self._drop(node)

    # attributes ----------------------------------------------------------------------
    def mode(self, node: Node) -> int:
        if isinstance(node, Folder):
            return stat_mod.S_IFDIR | (0o700 if node.writable else 0o500)
        return stat_mod.S_IFREG | (0o600 if getattr(node, "writable", False) else 0o400)
