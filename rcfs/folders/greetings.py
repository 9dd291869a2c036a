"""/greetings: what callers hear, one folder per answering rule; copy audio over a file
to replace that greeting.

The tree (layout and names from `rcfs.greetings_model`):

    /greetings/STATUS.txt                    every upload of this mount and what became of it
    /greetings/business-hours/Voicemail.mp3  the rule's custom greeting of that type
    /greetings/after-hours/Voicemail.wav
    /greetings/Family & VIP/Introductory.wav

Reading a greeting goes through the Reader and its block cache like every other
medium (Heavy group); the listing is refreshed after a TTL like /faxes (the rules:
one Medium request, plus one per custom greeting).

Replacing one: `cp hello.wav /greetings/business-hours/Voicemail.mp3` (over the
file), or `cp hello.wav /greetings/after-hours/HoldMusic.wav` (a type the rule plays a
preset for: `<Type>.mp3` or `<Type>.wav`, any case, for a type the rule lists; other
names: EINVAL). The bytes go through the outbox's write path (`rcfs.folders.spooled`):
spooled and fsync'd before `close` succeeds, MIME-sniffed from the content (MP3 or WAV
only: EMEDIUMTYPE at `write()` once the first bytes show another type, else at
`close()`), at most 20 MB (EFBIG), not empty (EINVAL), ENOSPC when the spool's disk is
full. Then the sender (`rcfs.sender`, channel "greeting") uploads it with `apply=true`,
the rule and the type, and once the API confirmed (the rule names the new greeting)
the folder shows it, named by its real type (`Voicemail.wav` after WAV audio was
copied over `Voicemail.mp3`). Until then the file reads back what was written.

Status: STATUS.txt, and `user.rc.*` xattrs on every greeting (`user.rc.state`:
queued, sending, sent (accepted, not yet seen on the rule), applied, failed). `rm` of a
greeting whose upload is still queued cancels the upload (nothing is sent); a greeting
itself cannot be deleted, only replaced (EACCES). `touch` of a failed upload tries it
again. A temporary name (rsync's `.name.XXXXXX`, GIO's `.goutputstream-*`, any hidden
or backup name) is written, checked and spooled like a greeting but uploads nothing
until it is renamed over a greeting's name: then it replaces that greeting, so `rsync`
and GIO's replace (`gio copy`, `gio save`, Nautilus) work like `cp`. A temporary that is
never renamed is kept in memory only and gone at the next mount.

Crash safety is the outbox's: an accepted upload is journalled in its own spool
(`<state>/<account>/greetings-spool/`) and resumed at the next mount; see
`rcfs.sender` for the reconciliation after an answer that never arrived.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import logging
import os
import time
from typing import Callable

import trio

from ..api.client import Priority
from ..api.errors import ApiError
from ..greetings_model import GreetingError, GreetingFile, GreetingsModel, UploadTarget, greeting_file_name
from ..reader import Reader, Source
from ..spool import Item, Part, Spool, new_item_id
from ..state import StateStore
from ..tree import File, Folder, Node, Tree
from .base import Opened, Refused
from .media import RemoteMediaOwner
from .spooled import LocalRead, SpooledOwner, SpooledWriter, is_temporary

log = logging.getLogger(__name__)

STATUS_NAME = "STATUS.txt"
STATUS_KEY = "greetings:status"
CHANNEL = "greeting"
PENDING_STATES = ("writing", "queued", "sending", "sent")


@dataclasses.dataclass
class _Slot:
    """One greeting type of one rule, as one file (one inode for good: replacing the
    greeting keeps the inode, so a program holding it sees the new greeting)."""

    node: File
    folder: Folder
    rule_id: str
    greeting_type: str
    remote: GreetingFile | None = None  # what the rule plays (None: a preset, no file)
    item: Item | None = None  # the latest upload into this slot

    @property
    def pending(self) -> bool:
        return self.item is not None and self.item.state in PENDING_STATES


@dataclasses.dataclass
class _RemoteRead:
    handle: int  # the Reader's


class GreetingsOwner(SpooledOwner, RemoteMediaOwner):
    """Owns /greetings: rule folders from `GreetingsModel`, uploads through the spool."""

    name = "greetings"
    read_only_reason = "holds one folder per answering rule; greetings are replaced by copying audio over them"

    def __init__(self, tree: Tree, folder: Folder, spool: Spool, *, model: GreetingsModel, client,
                 reader: Reader, state: StateStore, ttl: float, direct_io_above: int | None,
                 priority_of: Callable[[int], Priority], on_queued: Callable[[], None] = lambda: None,
                 listing_wait: float | None = None) -> None:
        extra = {} if listing_wait is None else {"listing_wait": listing_wait}
        super().__init__(tree, folder, spool, on_queued=on_queued, client=client, reader=reader, state=state,
                         ttl=ttl, direct_io_above=direct_io_above, priority_of=priority_of, **extra)
        self.model = model
        self._slots: dict[tuple[str, str], _Slot] = {}  # (rule id, greeting type) -> slot
        self._slot_by_inode: dict[int, _Slot] = {}
        self._rule_folders: dict[str, Folder] = {}  # folder name -> node
        self._model_lock = trio.Lock()  # model refreshes (listing, upload confirmation) one at a time
        self._replacing: dict[str, Item | None] = {}  # upload being written -> the slot's previous one
        self._plain_opens: set[str] = set()  # uploads opened without O_TRUNC (touch, editors)
        # Temporary files (rsync, GIO) waiting to be renamed over a greeting: item id ->
        # (node, item). Not journalled: until the rename nothing is promised.
        self._temps: dict[str, tuple[File, Item]] = {}
        self._pending: dict[str, tuple[Folder, str]] = {}  # temporaries renamed while still open
        self.tree.add(folder, File(key=STATUS_KEY, name=STATUS_NAME, mtime=time.time(), size=0))
        self._restore()

    # restoring after a (re)mount ---------------------------------------------------------
    def _restore(self) -> None:
        for item in self.spool.load():
            if item.channel != CHANNEL or len(item.path) != 2 or "type" not in item.options:
                log.error("greetings: ignoring a journal that is not a greeting upload: %s", item.id)
                continue
            if item.state == "delivered":  # applied before a crash deleted its journal
                self.spool.delete(item)
                continue
            self.items[item.id] = item
        waiting = self.waiting_count()
        if waiting:
            log.info("greetings: %d upload(s) from an earlier mount not finished yet", waiting)

    def waiting_count(self) -> int:
        return sum(1 for i in self.items.values() if i.state in ("queued", "sending", "sent"))

    # listing ----------------------------------------------------------------------------
    async def refresh(self, folder: Folder) -> None:
        await super().refresh(self.folder)  # one listing for the whole tree

    async def load(self) -> None:
        async with self._model_lock:
            await self.model.refresh(Priority.FOREGROUND)
            self._sync_tree()
            await self._confirm_seen()

    def _sync_tree(self) -> None:
        """Bring the tree in step with the model, leaving pending uploads as written."""
        live_folders = set()
        for fname, rule in self.model.folders.items():
            live_folders.add(fname)
            folder = self._rule_folders.get(fname)
            if folder is None or folder.parent is not self.folder:
                folder = self.tree.mkdir(self.folder, fname, key=f"greetings:rule:{rule.rule_id}", writable=True)
                self._rule_folders[fname] = folder
            seen = set()
            for gf in rule.files.values():
                slot = self._slot(folder, rule.rule_id, gf.greeting_type, gf.name)
                slot.remote = gf
                seen.add(gf.greeting_type)
                if not slot.pending and self._writer_of(slot.node) is None:
                    self._show_remote(slot)
            for (rid, gtype), slot in list(self._slots.items()):
                if rid == rule.rule_id and gtype not in seen:
                    slot.remote = None
                    if not slot.pending and self._writer_of(slot.node) is None:
                        self._remove_slot(slot)
        for fname, folder in list(self._rule_folders.items()):
            if fname not in live_folders and not any(s.folder is folder and s.pending for s in self._slots.values()):
                for (key, slot) in list(self._slots.items()):
                    if slot.folder is folder:
                        self._remove_slot(slot)
                self.tree.remove(self.folder, fname)
                del self._rule_folders[fname]
        # Uploads journalled by an earlier mount show in their slot until applied.
        for item in self.items.values():
            if item.state in PENDING_STATES or item.state == "failed":
                folder = self._folder_of_rule(item.recipient)
                if folder is None:
                    continue
                slot = self._slot(folder, item.recipient, item.options["type"], item.path[1])
                if slot.item is None or slot.item.id < item.id:
                    slot.item = item
                if slot.pending:
                    self._show_pending(slot)

    def _folder_of_rule(self, rule_id: str) -> Folder | None:
        for fname, rule in self.model.folders.items():
            if rule.rule_id == rule_id:
                return self._rule_folders.get(fname)
        return None

    def _slot(self, folder: Folder, rule_id: str, gtype: str, name: str) -> _Slot:
        slot = self._slots.get((rule_id, gtype))
        if slot is not None and slot.node.parent is folder and folder.children.get(slot.node.name) is slot.node:
            return slot
        node = File(key=f"greeting:{rule_id}:{gtype}", name=name, mtime=time.time(), size=None)
        node.writable = True  # replaceable: copy audio over it
        node = self.tree.add(folder, node)  # type: ignore[assignment]
        if slot is None:
            slot = _Slot(node, folder, rule_id, gtype)
        slot.node, slot.folder = node, folder
        self._slots[(rule_id, gtype)] = slot
        self._slot_by_inode[node.inode] = slot
        return slot

    def _remove_slot(self, slot: _Slot) -> None:
        self._slots.pop((slot.rule_id, slot.greeting_type), None)
        self._slot_by_inode.pop(slot.node.inode, None)
        if slot.folder.children.get(slot.node.name) is slot.node:
            self.tree.remove(slot.folder, slot.node.name)

    def _rename(self, slot: _Slot, name: str, *, keep_alias: bool = True) -> None:
        """Rename the slot's file; the old name keeps finding it (`Tree.rename`) unless
        `keep_alias` is false (a refused upload's name must not linger)."""
        old = slot.node.name
        if old == name:
            return
        other = slot.folder.children.get(name)
        if other is not None and other is not slot.node:
            other_slot = self._slot_by_inode.get(other.inode)
            if other_slot is not None:
                self._remove_slot(other_slot)
        self.tree.rename(slot.folder, slot.node, name)
        if not keep_alias:
            slot.folder.aliases.pop(old, None)

    def _show_remote(self, slot: _Slot, *, keep_alias: bool = True) -> None:
        gf = slot.remote
        assert gf is not None
        self._rename(slot, gf.name, keep_alias=keep_alias)
        slot.node.size = self.state.sizes.get(gf.source.key)
        slot.node.content_type = gf.content_type

    def _show_pending(self, slot: _Slot) -> None:
        item = slot.item
        assert item is not None
        if item.parts:
            slot.node.size = item.parts[0].size
            slot.node.content_type = item.parts[0].mime or None
        slot.node.mtime = item.mtime

    def _slot_of(self, node: Node) -> _Slot | None:
        slot = self._slot_by_inode.get(node.inode)
        return slot if slot is not None and slot.node is node else None

    # the background learner (rcfs.background) ---------------------------------------------
    def probe_targets(self):
        """The greetings the rules play whose size is not known yet: a greeting's file is
        keyed by its rule and type, its content by the greeting, so name the content.
        An upload being written or waiting shows its own bytes: nothing to learn there."""
        for slot in list(self._slots.values()):
            if (slot.remote is None or slot.node.size is not None or slot.pending
                    or self._writer_of(slot.node) is not None):
                continue
            yield slot.node, slot.remote.source

    def probe_learned_size(self, node: File, key: str, size: int) -> None:
        slot = self._slot_of(node)
        # Only while the slot still shows that greeting (a replacement may have begun).
        if (slot is not None and slot.remote is not None and slot.remote.source.key == key
                and not slot.pending and self._writer_of(node) is None):
            node.size = size  # attributes time out at once here: the next stat shows it

    # attributes and status -----------------------------------------------------------------
    def attr_timeout(self, node: Node) -> float | None:
        if isinstance(node, File):
            if node.key == STATUS_KEY:
                node.size = len(self._status_text())
            # A greeting's content changes when it is replaced (same inode): ask again.
            return 0.0
        return 1.0

    def xattrs(self, node: Node) -> dict[str, str]:
        values = dict(node.xattrs)
        slot = self._slot_of(node) if isinstance(node, File) else None
        if slot is None:
            return values
        values.update({"user.rc.rule_id": slot.rule_id, "user.rc.greeting_type": slot.greeting_type})
        if slot.remote is not None:
            values["user.rc.greeting_id"] = slot.remote.greeting_id
            values["user.rc.content_type"] = slot.remote.content_type
        if slot.node.size is not None:
            values["user.rc.size"] = str(slot.node.size)
        item = slot.item
        values["user.rc.state"] = "applied" if item is None or item.state == "delivered" else item.state
        if item is not None:
            part = item.parts[0] if item.parts else None
            values.update({
                "user.rc.attempts": str(item.attempts),
                "user.rc.upload_id": item.message_id or "",
                "user.rc.error": item.error or "",
                "user.rc.sha256": part.sha256 if part else "",
            })
            if item.state in PENDING_STATES and part is not None:
                values["user.rc.content_type"] = part.mime
        return values

    def _describe(self, item: Item) -> str:
        when = dt.datetime.fromtimestamp(item.sent_at or item.created).strftime("%Y-%m-%d %H:%M:%S")
        what = {"writing": "being written",
                "queued": "waiting to be uploaded",
                "sending": "uploading",
                "sent": f"uploaded as greeting {item.message_id}, waiting for the rule to show it",
                "delivered": f"applied: the rule plays greeting {item.message_id}",
                "failed": f"FAILED: {item.error} (touch the file to try again)",
                "cancelled": "cancelled, nothing was uploaded"}.get(item.state, item.state)
        if item.state == "queued" and item.attempts:
            what += f" (attempt {item.attempts + 1}; last: {item.error})"
        return f"{when}  {'/'.join(item.path)}  {item.options.get('type')}  {what}"

    def _status_text(self) -> bytes:
        items = sorted(self.items.values(), key=lambda i: i.id)
        counts = {s: sum(1 for i in items if i.state == s) for s in ("queued", "sending", "sent", "delivered", "failed")}
        words = {"delivered": "applied"}
        summary = ", ".join(f"{n} {words.get(s, s)}" for s, n in counts.items() if n) or "no uploads yet"
        lines = ["rcfs greetings: uploads of this mount (and unfinished ones of earlier mounts)", summary, ""]
        lines += [self._describe(i) for i in items]
        return ("\n".join(lines) + "\n").encode()

    # reads -----------------------------------------------------------------------------------
    async def open(self, node: File, flags: int, pid: int) -> Opened:
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        if node.key == STATUS_KEY:
            if writing:
                raise Refused(errno.EACCES, f"{STATUS_NAME} is written by rcfs")
            return Opened(self._handle(LocalRead(data=self._status_text())), direct_io=True, keep_cache=False)
        temp = self._temp_of(node)
        if temp is not None:
            if writing or not temp.parts:
                raise Refused(errno.EACCES, f"{node.name!r}: a temporary file is written once, then renamed "
                                            "over a greeting")
            return Opened(self._handle(LocalRead(part=temp.parts[0])), keep_cache=False)
        slot = self._slot_of(node)
        if slot is None:
            raise Refused(errno.ENOENT)
        if writing:
            writer = await self._start_upload(slot, slot.node.name, pid)
            if not flags & os.O_TRUNC:
                self._plain_opens.add(writer.item.id)
            return Opened(self._handle(writer), keep_cache=False)
        if slot.pending and slot.item is not None and slot.item.parts:
            return Opened(self._handle(LocalRead(part=slot.item.parts[0])), keep_cache=False)
        if slot.remote is None:
            raise Refused(errno.ENOENT)
        key = slot.remote.source.key
        handle = await self.reader.open(Source(key, slot.remote.source.url, self.state.sizes.get(key)),
                                        priority=self.priority_of(pid))
        size = self.reader.known_size(key)
        if size is not None:
            node.size = size
        # keep_cache off: the same inode shows the new greeting once one is replaced.
        return Opened(self._handle(_RemoteRead(handle)), keep_cache=False)

    async def read(self, handle: int, offset: int, length: int):
        state = self._handles.get(handle)
        if isinstance(state, _RemoteRead):
            return await self.reader.read(state.handle, offset, length)
        return await self._read_local(state, offset, length)

    # writes ------------------------------------------------------------------------------------
    def _target(self, folder: Folder, name: str) -> UploadTarget:
        try:
            return self.model.upload_target(folder.name, name)
        except GreetingError as exc:
            raise Refused(exc.errno, str(exc)) from None

    async def create(self, folder: Folder, name: str, flags: int, pid: int) -> tuple[File, Opened]:
        if folder is self.folder or folder.parent is not self.folder:
            raise Refused(errno.EACCES, f"cannot create {name!r} here: a greeting goes into its rule's folder, "
                                        "e.g. /greetings/business-hours/Voicemail.mp3")
        if is_temporary(name):
            return await self._start_temp(folder, name, pid)
        target = self._target(folder, name)
        slot = self._slot(folder, target.answering_rule_id, target.greeting_type, name)
        writer = await self._start_upload(slot, name, pid)
        return slot.node, Opened(self._handle(writer), keep_cache=False)

    async def _start_temp(self, folder: Folder, name: str, pid: int) -> tuple[File, Opened]:
        """A temporary file in a rule folder: checked and spooled like a greeting, uploaded
        only once renamed over one (`rename`)."""
        if self.tree.child(folder, name) is not None:
            raise Refused(errno.EEXIST, f"{name!r} exists")
        item = Item(id=new_item_id(), channel=CHANNEL, recipient="", path=[folder.name, name], state="writing")
        part = Part(name=name, data=f"{item.id}-0")
        try:
            fd = self.spool.open_part(part.data)
        except OSError as exc:
            raise Refused(exc.errno or errno.EIO, f"cannot spool {name!r}: {exc.strerror}") from None
        node = File(key=f"greetings:temp:{item.id}", name=name, mtime=time.time(), size=0)
        node.writable = True
        node = self.tree.add(folder, node)  # type: ignore[assignment]
        self._temps[item.id] = (node, item)
        writer = SpooledWriter(node=node, item=item, part=part, fd=fd, channel=CHANNEL, pid=pid)
        return node, Opened(self._handle(writer), keep_cache=False)

    def _temp_of(self, node: Node) -> Item | None:
        if not node.key.startswith("greetings:temp:"):
            return None
        found = self._temps.get(node.key.split(":", 2)[2])
        return found[1] if found is not None and found[0] is node else None

    def _forget_temp(self, item: Item, why: str) -> None:
        self._pending.pop(item.id, None)
        node, _ = self._temps.pop(item.id, (None, None))
        if node is not None and node.parent is not None and node.parent.children.get(node.name) is node:
            self.tree.remove(node.parent, node.name)
        for part in item.parts:
            self.spool.remove_part(part.data)
        self.spool.remove_part(f"{item.id}-0")
        log.debug("greetings: temporary %s %s", "/".join(item.path), why)

    async def rename(self, folder: Folder, name: str, new_folder: Folder, new_name: str) -> None:
        """rsync and GIO: a temporary renamed over a greeting's name replaces that greeting
        (one upload, as if `cp` had written it). Greetings themselves keep their names."""
        node = self.tree.child(folder, name)
        if node is None:
            raise Refused(errno.ENOENT)
        temp = self._temp_of(node)
        if temp is None:
            raise Refused(errno.EACCES, f"{name!r}: a greeting keeps its name (its type); copy audio over "
                                        "another one to replace that")
        if new_folder.parent is not self.folder:
            raise Refused(errno.EACCES, f"{new_name!r}: a greeting goes into its rule's folder")
        still_open = self._writer_of(node) is not None
        if not still_open and temp.state != "held":
            raise Refused(errno.EBUSY, f"{name!r} is still being written")
        if is_temporary(new_name):  # one temporary renamed to another: still nothing to upload
            other = self.tree.child(new_folder, new_name)
            if other is not None and other is not node:
                other_temp = self._temp_of(other)
                if other_temp is None:
                    raise Refused(errno.EACCES, f"{new_name!r} cannot be replaced")
                self._forget_temp(other_temp, "replaced")
            self.tree.move(node, new_folder, new_name)
            temp.path = [new_folder.name, new_name]
            return
        self._slot_for_temp(new_folder, new_name)  # refuses what the upload would refuse, now
        if still_open:
            # GIO renames its temporary before it closes it: the upload starts at that close.
            self._pending[temp.id] = (new_folder, new_name)
            self.tree.remove(folder, name)
            temp.path = [new_folder.name, new_name]
            return
        await self._bind_temp(temp, node, new_folder, new_name)

    def _slot_for_temp(self, folder: Folder, name: str) -> _Slot:
        """The slot a temporary renamed to `name` replaces; EINVAL (no greeting name), EBUSY."""
        target = self._target(folder, name)
        slot = self._slot(folder, target.answering_rule_id, target.greeting_type, name)
        writer = self._writer_of(slot.node)
        if writer is not None:
            if writer.dirty or writer.head or slot.node.size:
                raise Refused(errno.EBUSY, f"{folder.name}/{name} is being written by another program")
            # GIO's replace holds the target open (no O_TRUNC, nothing written) while it
            # writes its temporary: that open uploads nothing.
            writer.cancelled = writer.finished = True
            self._drop(writer, "replaced by a renamed temporary file")
            slot = self._slot(folder, target.answering_rule_id, target.greeting_type, name)
        if slot.item is not None and slot.item.state == "sending":
            raise Refused(errno.EBUSY, f"{folder.name}/{name}: the last upload is under way; try again "
                                       "once STATUS.txt shows it")
        return slot

    async def _bind_temp(self, temp: Item, node: File, folder: Folder, name: str) -> None:
        """A closed, checked temporary becomes the upload of the greeting it was renamed over."""
        slot = self._slot_for_temp(folder, name)
        target = self._target(folder, name)
        self._temps.pop(temp.id, None)
        self._pending.pop(temp.id, None)
        if node.parent is not None and node.parent.children.get(node.name) is node:
            self.tree.remove(node.parent, node.name)
        if slot.node.name != name:
            self._rename(slot, name)
        previous = slot.item
        temp.recipient = target.answering_rule_id
        temp.path = [folder.name, name]
        temp.options = {"type": target.greeting_type, "previous": slot.remote.greeting_id if slot.remote else ""}
        self.items[temp.id] = temp
        self._item_nodes[temp.id] = slot.node
        self._replacing[temp.id] = previous
        slot.item = temp
        log.info("greetings: a temporary file renamed over %s/%s (%s greeting of rule %s)", folder.name, name,
                 target.greeting_type, target.answering_rule_id)
        await self._queue_upload(temp, slot.node, temp.parts[0])

    async def _start_upload(self, slot: _Slot, name: str, pid: int) -> SpooledWriter:
        target = self._target(slot.folder, name)
        if self._writer_of(slot.node) is not None:
            raise Refused(errno.EBUSY, f"{slot.folder.name}/{name} is being written by another program")
        previous = slot.item
        if previous is not None and previous.state == "sending":
            raise Refused(errno.EBUSY, f"{slot.folder.name}/{name}: the last upload is under way; try again "
                                       "once STATUS.txt shows it")
        item = Item(id=new_item_id(), channel=CHANNEL, recipient=target.answering_rule_id,
                    path=[slot.folder.name, name], state="writing",
                    options={"type": target.greeting_type,
                             "previous": slot.remote.greeting_id if slot.remote else ""})
        part = Part(name=target.file_name, data=f"{item.id}-0")
        try:
            fd = self.spool.open_part(part.data)
        except OSError as exc:
            raise Refused(exc.errno or errno.EIO, f"cannot spool {name!r}: {exc.strerror}") from None
        if slot.node.name != name:
            self._rename(slot, name)  # `cp x.wav Voicemail.wav` over Voicemail.mp3: one file
        slot.node.size = 0
        self.items[item.id] = item
        self._item_nodes[item.id] = slot.node
        self._replacing[item.id] = previous
        slot.item = item
        log.info("greetings: receiving %s/%s (%s greeting of rule %s)", slot.folder.name, name,
                 target.greeting_type, target.answering_rule_id)
        return SpooledWriter(node=slot.node, item=item, part=part, fd=fd, channel=CHANNEL, pid=pid)

    async def write(self, handle: int, offset: int, data: bytes) -> int:
        state = self._handles.get(handle)
        if not isinstance(state, SpooledWriter):
            raise Refused(errno.EBADF)
        return await self._write_spooled(state, offset, data)

    async def flush(self, handle: int) -> None:
        state = self._handles.get(handle)
        if isinstance(state, SpooledWriter):
            if (state.item.id in self._plain_opens and not state.finished and not state.head
                    and not state.node.size):
                # Opened without O_TRUNC and closed without a byte written: `touch`, a
                # file manager probing. Not an upload (an empty `cp` truncates: EINVAL).
                state.cancelled = state.finished = True
                self._drop(state, "opened and closed without writing")
                await self.touch(state.node, None)
                return
            await self._flush_spooled(state)

    async def release(self, handle: int) -> None:
        state = self._handles.pop(handle, None)
        if isinstance(state, SpooledWriter):
            await self._release_spooled(state)
        elif isinstance(state, _RemoteRead):
            self.reader.close(state.handle)

    async def truncate(self, node: File, size: int) -> None:
        if self._truncate_writer(node, size):
            return
        raise Refused(errno.EACCES, f"{node.name!r}: a greeting is replaced whole (copy audio over it)")

    async def _accept(self, w: SpooledWriter) -> None:
        """The audio passed every check: journal it and queue the upload (a temporary
        file: keep it until it is renamed over a greeting)."""
        if w.item.id in self._temps:
            w.item.parts = [w.part]
            w.item.state = "held"
            w.node.size = w.part.size
            w.node.content_type = w.part.mime
            pending = self._pending.get(w.item.id)
            if pending is None:
                log.info("greetings: %s (%s, %d bytes) kept until it is renamed over a greeting",
                         "/".join(w.item.path), w.part.mime, w.part.size)
                return
            try:
                await self._bind_temp(w.item, w.node, *pending)
            except Refused as exc:
                self._forget_temp(w.item, str(exc))
                raise
            return
        try:
            await self._queue_upload(w.item, w.node, w.part)
        except Refused as exc:
            w.error = exc
            self._drop(w, str(exc))
            raise

    async def _queue_upload(self, item: Item, node: File, part: Part) -> None:
        previous = self._replacing.pop(item.id, None)
        self._plain_opens.discard(item.id)
        if previous is not None and previous.state in ("queued", "failed"):
            self._forget(previous, "replaced by a newer upload before it was sent")
        item.parts = [part]
        item.mtime = node.mtime = time.time()
        node.size = part.size
        node.content_type = part.mime
        # The name the API will show: the type's, with the extension of the real audio.
        part.name = greeting_file_name(item.options["type"], part.mime)
        item.state = "queued"
        item.history.append([time.time(), "queued", "closed"])
        try:
            await self._save(item)
        except OSError as exc:
            raise Refused(exc.errno or errno.EIO, f"{node.name!r}: cannot journal: {exc.strerror}; not sent") from None
        log.info("greetings: %s (%s, %d bytes) queued for upload", "/".join(item.path), part.mime, part.size)
        self.on_queued()

    def _drop(self, w: SpooledWriter, why: str) -> None:
        """A refused upload: forget it, and show the greeting the rule plays again."""
        if w.item.id in self._temps:
            self._forget_temp(w.item, f"dropped: {why}")
            return
        self.spool.remove_part(w.part.data)
        self.items.pop(w.item.id, None)
        self._item_nodes.pop(w.item.id, None)
        self.spool.delete(w.item)
        previous = self._replacing.pop(w.item.id, None)
        self._plain_opens.discard(w.item.id)
        slot = self._slot_of(w.node)
        if slot is not None:
            if slot.item is w.item:
                slot.item = previous if previous is not None and previous.id in self.items else None
            if slot.pending:
                self._rename(slot, slot.item.path[1], keep_alias=False)
                self._show_pending(slot)
            elif slot.remote is not None:
                self._show_remote(slot, keep_alias=False)
            else:
                self._remove_slot(slot)
        log.debug("greetings: dropped %s: %s", w.node.name, why)

    def _forget(self, item: Item, why: str) -> None:
        self.items.pop(item.id, None)
        self._item_nodes.pop(item.id, None)
        self.spool.delete(item)
        log.info("greetings: upload of %s %s", "/".join(item.path), why)

    async def unlink(self, folder: Folder, name: str) -> None:
        node = self.tree.child(folder, name)
        if node is None:
            raise Refused(errno.ENOENT)
        temp = self._temp_of(node)
        if temp is not None:  # rsync removes its temporary after a failed transfer
            writer = self._writer_of(node)
            if writer is not None:
                writer.cancelled = True
            self._forget_temp(temp, "removed")
            return
        slot = self._slot_of(node)
        if slot is not None and slot.item is not None and slot.item.state in ("queued", "failed") \
                and self._writer_of(node) is None:
            item = slot.item
            slot.item = None
            self._forget(item, "cancelled, nothing was uploaded" if item.state == "queued" else "cleared")
            if slot.remote is not None:
                self._show_remote(slot)
            else:
                self._remove_slot(slot)
            return
        raise Refused(errno.EACCES, f"{name!r}: a greeting cannot be deleted, only replaced "
                                    "(copy an MP3 or WAV over it)")

    async def touch(self, node: Node, mtime: float | None) -> None:
        """`cp -p`, `touch`: accepted (times are the API's); a failed upload is retried."""
        slot = self._slot_of(node) if isinstance(node, File) else None
        if slot is None or slot.item is None or slot.item.state != "failed":
            return
        item = slot.item
        item.state, item.error, item.attempts, item.next_attempt = "queued", None, 0, 0.0
        item.history.append([time.time(), "queued", "touched"])
        await self._save(item)
        self._show_pending(slot)
        log.info("greetings: %s queued again (touched)", "/".join(item.path))
        self.on_queued()

    # for the sender -----------------------------------------------------------------------------
    def upload_target(self, item: Item) -> UploadTarget:
        part = item.parts[0]
        return UploadTarget(item.recipient, item.options["type"], part.name, part.mime)

    async def uploaded(self, item: Item, greeting: dict) -> None:
        """The sender's upload was accepted (or found applied): show it once the rule does."""
        try:
            # One model refresh at a time: a TTL refresh that started before the upload
            # must not finish after this one and show the old greeting again.
            async with self._model_lock:
                await self.model.confirm_upload(item.path[0], self.upload_target(item), greeting,
                                                priority=Priority.OUTBOX)
        except (GreetingError, ApiError) as exc:
            item.error = f"uploaded, but the rule does not show it yet: {exc}"
            log.warning("greetings: %s: %s", "/".join(item.path), item.error)
            self.invalidate()  # the next look asks again
            return
        self.loaded_at = trio.current_time()
        self._applied(item)
        self._sync_tree()

    async def _confirm_seen(self) -> None:
        """After a listing: uploads the API accepted (maybe before a remount) that the rule
        now plays are done."""
        for item in list(self.items.values()):
            if item.state != "sent" or not item.message_id:
                continue
            rule = next((r for r in self.model.folders.values() if r.rule_id == item.recipient), None)
            if rule and any(f.greeting_id == item.message_id for f in rule.files.values()):
                self._applied(item)
        self._sync_tree()

    def _applied(self, item: Item) -> None:
        item.state = "delivered"
        item.delivery_status = "Applied"
        item.error = None
        item.history.append([time.time(), "delivered", f"the rule plays greeting {item.message_id}"])
        # Nothing left to send: the journal and the bytes go; STATUS.txt keeps the line
        # until unmount (the greeting itself is now the rule's, read from the API).
        self.spool.delete(item)
        slot = self._slots.get((item.recipient, item.options["type"]))
        if slot is not None and slot.item is item:
            slot.remote = next((f for r in self.model.folders.values() if r.rule_id == item.recipient
                                for f in r.files.values() if f.greeting_type == item.options["type"]),
                               slot.remote)
            if slot.remote is not None:
                self._show_remote(slot)
        log.info("greetings: %s applied: the rule plays greeting %s", "/".join(item.path), item.message_id)
