"""/texts: one file per SMS conversation, a transcript you read, follow and append to.

    /texts/+14155550123.txt                    a conversation with one person
    /texts/+14155550123, +14155550124.txt      a group text: named after its other parties
    /texts/+14155550123 via +16505550101.txt   texted from another of the user's numbers
                                               than the default one (the first number
                                               with the SmsSender feature, primary first)

A transcript is rendered from the message-store listing alone (the records' `subject`
carries an SMS's text; CONTRACT §6.2), so `ls -l` shows exact sizes without a request per
file. One message is one block, in time order:

    2026-11-03 14:02:11  +14155550123 → me    Are we still on for 3?
    2026-11-03 14:05:40  me → +14155550123    Yes, see you there.
                                              (a second line of the same text)
    2026-11-03 14:06:02  +14155550123 → me    [MMS: mms/2026-11-03_14-06-02_from_+14155550123_7000000412/01_map.png]

Times are UTC (as in every file name of the mount); texts pass `names.safe_text`
(no terminal escapes, no bidi overrides). A transcript only grows while mounted: a
message that arrives is appended (even one dated before the last line shown), a message
already shown is never re-rendered (a status change does not touch it), and a message
the service deletes stays in the transcript until the next mount, which renders the
conversation from what the service still has. So `tail -f` and `rsync --append` work.
While a transcript is open for reading, the folder is refreshed every second once its
listing TTL has passed (one ISync request, Light): `tail -f` sees new texts.

Reply by appending: the bytes written between open (O_APPEND, or at the end) and the
last close are one SMS, minus one trailing newline, sent to the conversation's other
parties from the user's number in it. They go through a spool and `rcfs.sender`, as the
outbox's files do: durable (fsync'd and journalled) before `close` returns, sent exactly
once across a crash, state in `user.rc.*` xattrs of the file. Appending to a name that is
not a conversation yet starts one (`(415) 555-0123.txt` means `+14155550123.txt`).
Refused, with a log line and nothing sent: a write that is not at the end, a truncate, a
rename or unlink (EPERM, "texts are append-only: append to send"); bytes that are not
UTF-8 (EILSEQ); more than 1000 UTF-16 code units (EMSGSIZE: the API's limit for one SMS,
`CreateSMSMessage.text`; the API splits a long text into carrier segments itself but
takes no more than that in one message, so rcfs does not split either). An empty append
sends nothing.

The owner is given the extension whose conversations it shows (`extension_id`, "~" for
the user's own) and whether it may send (`read_only`: a company admin's view of someone
else's texts does not text as them).
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import errno
import logging
import os
import time
from typing import Callable

import trio

from .. import names
from ..api.client import Priority
from ..api.errors import AuthError, NotFound, Rejected
from ..phone import InvalidNumber, to_e164
from ..spool import FINAL_STATES, Item, Part, Spool, new_item_id
from ..tree import File, Folder, Node, Tree
from .base import Opened, Refused
from .messages import MessageFolderOwner

log = logging.getLogger(__name__)

APPEND_ONLY = "texts are append-only: append to send"
SMS_MAX_UNITS = 1000  # UTF-16 code units of one SMS (CreateSMSMessage.text)
SUFFIX = ".txt"
VIA = " via "
FOLLOW_EVERY = 1.0  # seconds between refresh checks while a transcript is open for reading


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def sms_text(data: bytes) -> str:
    """What one append sends: its UTF-8 text without one trailing newline."""
    text = data.decode("utf-8")
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


@dataclasses.dataclass(eq=False)
class Conversation:
    name: str
    node: File
    mine: str  # the user's number in it ("" until known)
    others: list[str]
    conversation_id: str = ""
    data: bytearray = dataclasses.field(default_factory=bytearray)
    messages: int = 0


@dataclasses.dataclass(eq=False)
class _Reading:
    conv: Conversation


@dataclasses.dataclass(eq=False)
class _Append:
    """One open for writing: the bytes of one SMS, kept in memory (at most a few KB)."""

    conv: Conversation
    pid: int
    append: bool  # opened with O_APPEND: every write is at the end by definition
    base: int | None  # the offset of the first byte written
    buf: bytearray = dataclasses.field(default_factory=bytearray)
    decoder: codecs.IncrementalDecoder = dataclasses.field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("strict"))
    units: int = 0
    tail: str = ""  # the last two characters decoded
    error: Refused | None = None
    finished: bool = False


class TextsOwner(MessageFolderOwner):
    """Owns /texts (or a mailbox's texts): transcripts from the SMS listing, appends to send."""

    stable_file_attrs = False  # transcripts grow (see attr_timeout)

    read_only_reason = "shows someone else's texts; an admin does not text as them"

    def __init__(self, tree: Tree, folder: Folder, spool: Spool | None, *, extension_id: str = "~",
                 read_only: bool = False, default_region: str = "US",
                 on_queued: Callable[[], None] = lambda: None, **kw) -> None:
        super().__init__(tree, folder, message_type="SMS", extension_id=extension_id, **kw)
        self.read_only = read_only or spool is None
        self.spool = spool
        self.default_region = default_region
        self.on_queued = on_queued
        self.mount_target = ""  # the mountpoint's real path, for /proc/PID/fd links
        self.conversations: dict[str, Conversation] = {}  # file name -> conversation
        self.shown: set[str] = set()  # message ids rendered into a transcript
        self.my_numbers: list[str] = []  # the extension's numbers; SMS senders first
        self.default_sender = ""
        self._numbers_asked = False
        self.items: dict[str, Item] = {}  # appends being sent (the Sender's view)
        self._handles: dict[int, object] = {}
        self._next_handle = 1
        self._readers = 0
        self._following = False
        if spool is not None:
            self._restore()

    # restoring after a (re)mount ----------------------------------------------------------
    def _restore(self) -> None:
        assert self.spool is not None
        for item in self.spool.load():
            if item.state == "delivered":
                self.spool.delete(item)  # in the transcript by now: nothing left to show
                continue
            if item.state == "writing":
                self.spool.delete(item)
                continue
            self.items[item.id] = item
            others = [n for n in item.options.get("to", "").split(",") if n]
            self._conversation(item.path[0], item.options.get("from", ""), others or [item.recipient])
        waiting = self.waiting_count()
        if waiting:
            log.info("texts: %d text(s) from an earlier mount waiting to be sent", waiting)

    def waiting_count(self) -> int:
        return sum(1 for i in self.items.values() if i.state in ("queued", "sending"))

    # listing ---------------------------------------------------------------------------------
    async def load(self) -> None:
        if not self._numbers_asked and self.extension_id != "~":
            # Another user's mailbox: their numbers are not asked for (its texts are
            # read-only, and a conversation is then named after its other parties alone).
            self._numbers_asked = True
        if not self._numbers_asked:
            # Names depend on the numbers (" via "), so a passing failure fails the listing
            # (shown again at the next look) rather than naming files that later change.
            # A refusal (no permission to read the numbers) is for good: named without them.
            try:
                records = await self.client.list_phone_numbers(priority=Priority.FOREGROUND)
            except (AuthError, Rejected, NotFound) as exc:
                log.warning("texts: cannot read the extension's numbers (%s); conversations are "
                            "named without the number they were texted from", exc)
                records = []
            self._numbers_asked = True
            senders = [r for r in records if isinstance(r, dict) and isinstance(r.get("phoneNumber"), str)
                       and "SmsSender" in (r.get("features") or [])]
            senders.sort(key=lambda r: not r.get("primary"))
            self.default_sender = senders[0]["phoneNumber"] if senders else ""
            self.my_numbers = [r["phoneNumber"] for r in records
                               if isinstance(r, dict) and isinstance(r.get("phoneNumber"), str)]
        await super().load()

    def apply(self, records: list, *, full: bool) -> None:
        """Append what is new to its transcript; never change what was shown."""
        fresh = []
        for record in records:
            if not isinstance(record, dict):
                continue
            mid = record.get("id")
            if isinstance(mid, bool) or not isinstance(mid, (int, str)) or str(mid) == "":
                continue
            if str(mid) in self.shown or record.get("availability", "Alive") != "Alive":
                continue
            if record.get("type", "SMS") != "SMS":
                continue
            created = names.parse_time(record.get("creationTime"))
            if created is None:
                created = dt.datetime.now(dt.timezone.utc)
            fresh.append((created, str(mid), record))
        fresh.sort(key=lambda c: (c[0], len(c[1]), c[1]))
        changed = set()
        for created, mid, record in fresh:
            try:
                mine, others = self._parties(record)
                conv = self._conversation(self.file_name(others, mine), mine, others)
                block = self.render(record, created, mine, others)
            except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
                log.warning("texts: skipping malformed message record %s: %s", mid, exc)
                continue
            self.shown.add(mid)
            conv.data += block.encode("utf-8")
            conv.messages += 1
            if not conv.conversation_id and record.get("conversationId") is not None:
                conv.conversation_id = str(record["conversationId"])
            conv.node.size = len(conv.data)
            stamp = names.clamp_timestamp(created)
            conv.node.mtime = stamp if conv.messages == 1 else max(conv.node.mtime, stamp)
            changed.add(conv.name)
        if changed:
            log.debug("texts: %d new message(s) in %d conversation(s)", len(fresh), len(changed))

    @staticmethod
    def _number(party: object) -> str:
        if not isinstance(party, dict):
            return names.party_label(party if isinstance(party, str) else None)
        return names.party_label(party.get("phoneNumber") or party.get("extensionNumber"), party.get("name"))

    def _parties(self, record: dict) -> tuple[str, list[str]]:
        """(the user's number, the other parties) of one text."""
        frm = self._number(record.get("from"))
        to = record.get("to") or []
        if not isinstance(to, list):
            to = [to]
        tos = [self._number(p) for p in to]
        if record.get("direction") == "Outbound":
            mine, others = frm, tos
        else:
            mine = next((n for n in tos if n in self.my_numbers), tos[0] if tos else "")
            others = [frm] + [n for n in tos if n != mine]
        others = sorted(set(n for n in others if n != mine)) or ["unknown"]
        return mine, others

    def file_name(self, others: list[str], mine: str) -> str:
        stem = ", ".join(sorted(set(others)))
        if mine and self.default_sender and mine != self.default_sender:
            stem += VIA + mine
        return names.safe_component(stem, max_bytes=names.MAX_COMPONENT_BYTES) + SUFFIX

    def _conversation(self, name: str, mine: str, others: list[str]) -> Conversation:
        conv = self.conversations.get(name)
        if conv is not None:
            if not conv.mine and mine:
                conv.mine = mine
            return conv
        # Dated by its last message once it has one (`ls -t` puts the latest conversation first).
        node = File(key=f"texts:{self.extension_id}:{name}", name=name, mtime=time.time(), size=0,
                    content_type="text/plain")
        node.writable = not self.read_only
        added = self.tree.add(self.folder, node)
        assert isinstance(added, File)
        conv = self.conversations[name] = Conversation(name=name, node=added, mine=mine, others=list(others))
        return conv

    def render(self, record: dict, created: dt.datetime, mine: str, others: list[str]) -> str:
        """One message as its block of lines (see the module docstring)."""
        when = created.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if record.get("direction") == "Outbound":
            to = record.get("to") or []
            if not isinstance(to, list):
                to = [to]
            head = "me → " + ", ".join(sorted({self._number(p) for p in to} - {mine}) or others)
        else:
            head = f"{self._number(record.get('from'))} → me"
        text = names.safe_text(record.get("subject")) if record.get("subject") else ""
        lines = text.split("\n") if text else []
        lines += [f"[MMS: mms/{path}]" for path in self._mms_paths(record, created)]
        if not lines:
            lines = ["[no text]"]
        prefix = f"{when}  {head}    "
        indent = " " * len(prefix)
        return prefix + lines[0] + "\n" + "".join(indent + line + "\n" for line in lines[1:])

    @staticmethod
    def _mms_paths(record: dict, created: dt.datetime) -> list[str]:
        """Where /mms shows this message's attachments (named as `messages` names them)."""
        raw = record.get("attachments") or []
        if not isinstance(raw, list):
            return []
        media = [a for a in raw if isinstance(a, dict) and isinstance(a.get("uri"), str) and a["uri"]
                 and not isinstance(a.get("id"), bool) and isinstance(a.get("id"), (int, str)) and a["id"] != ""
                 and a.get("type") == "MmsAttachment"]
        if not media:
            return []
        stem = names.base_name(created, record.get("direction"), names.other_party(record), str(record["id"]))
        out = []
        for i, att in enumerate(media, start=1):
            ctype = att.get("contentType") if isinstance(att.get("contentType"), str) else None
            out.append(f"{stem}/{names.attachment_name(att.get('fileName'), i, ctype)}")
        return out

    # lookups -----------------------------------------------------------------------------------
    def _canonical(self, name: str) -> tuple[str, str, list[str]]:
        """(file name, the user's number, others) that `name` means; Refused when none."""
        if not name.endswith(SUFFIX) or len(name) == len(SUFFIX):
            raise Refused(errno.EINVAL, f"/texts/{name}: a conversation is named by phone number, "
                                        "e.g. +14155550123.txt")
        stem = name[: -len(SUFFIX)]
        mine = self.default_sender
        if VIA in stem:
            stem, _, via = stem.partition(VIA)
            try:
                mine = to_e164(via, self.default_region)
            except InvalidNumber as exc:
                raise Refused(errno.EINVAL, f"/texts/{name}: {exc}") from None
            if self.my_numbers and mine not in self.my_numbers:
                raise Refused(errno.EINVAL, f"/texts/{name}: {mine} is not one of your numbers")
        try:
            others = sorted({to_e164(part, self.default_region) for part in stem.split(",") if part.strip()})
        except InvalidNumber as exc:
            raise Refused(errno.EINVAL, f"/texts/{name}: {exc}") from None
        if not others:
            raise Refused(errno.EINVAL, f"/texts/{name}: no phone number in the name")
        return self.file_name(others, mine), mine, others

    async def lookup(self, folder: Folder, name: str) -> Node | None:
        await self.refresh(folder)
        node = self.tree.child(folder, name)
        if node is None and folder is self.folder and name.endswith(SUFFIX):
            try:
                canonical, _, _ = self._canonical(name)
            except Refused:
                return None
            conv = self.conversations.get(canonical)
            if conv is not None:
                folder.aliases[name] = conv.node  # the spelling used keeps finding it
                node = conv.node
        return node

    def _conv_of(self, node: File) -> Conversation:
        conv = self.conversations.get(node.name)
        if conv is None or conv.node is not node:
            raise Refused(errno.ENOENT)
        return conv

    # attributes --------------------------------------------------------------------------------
    def presented_size(self, node: File) -> int:
        conv = self.conversations.get(node.name)
        return len(conv.data) if conv is not None and conv.node is node else node.apparent_size

    def attr_timeout(self, node: Node) -> float | None:
        # A transcript grows: `tail -f` and `ls -l` must see its size of now.
        return 0.0 if isinstance(node, File) else 1.0

    def xattrs(self, node: Node) -> dict[str, str]:
        values = dict(node.xattrs)
        conv = self.conversations.get(node.name) if isinstance(node, File) else None
        if conv is None or conv.node is not node:
            return values
        values.update({
            "user.rc.type": "SMS conversation",
            "user.rc.conversation_id": conv.conversation_id,
            "user.rc.from": conv.mine,
            "user.rc.to": ",".join(conv.others),
            "user.rc.messages": str(conv.messages),
            "user.rc.size": str(len(conv.data)),
        })
        mine = [i for i in self.items.values() if i.path and i.path[0] == conv.name]
        if mine:
            last = max(mine, key=lambda i: i.id)
            values.update({
                "user.rc.state": last.state,
                "user.rc.attempts": str(last.attempts),
                "user.rc.message_id": last.message_id or "",
                "user.rc.delivery_status": last.delivery_status or "",
                "user.rc.error": last.error or "",
                "user.rc.waiting": str(sum(1 for i in mine if i.state in ("queued", "sending"))),
            })
        return values

    # reads ----------------------------------------------------------------------------------
    def _handle(self, state: object) -> int:
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = state
        return handle

    async def open(self, node: File, flags: int, pid: int) -> Opened:
        conv = self._conv_of(node)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            if self.read_only:
                raise self.refuse(f"cannot write {node.name!r}")
            if flags & os.O_TRUNC:
                raise Refused(errno.EPERM, f"/texts/{node.name}: cannot truncate: {APPEND_ONLY}")
            append = bool(flags & os.O_APPEND)
            writer = _Append(conv=conv, pid=pid, append=append, base=None if append else len(conv.data))
            # Reading through a read-write descriptor is allowed; what it reads is the transcript.
            return Opened(self._handle(writer), direct_io=True, keep_cache=False)
        self._readers += 1
        self._follow()
        # Direct I/O: every read comes here, so a reader polling for growth (`tail -f`)
        # gets the bytes appended since, never a page cached before they existed.
        return Opened(self._handle(_Reading(conv)), direct_io=True, keep_cache=False)

    async def read(self, handle: int, offset: int, length: int) -> bytes:
        state = self._handles.get(handle)
        if isinstance(state, (_Reading, _Append)):
            return bytes(state.conv.data[offset: offset + length])
        raise Refused(errno.EBADF)

    def _follow(self) -> None:
        """While a transcript is open for reading, keep the listing fresh (see the docstring)."""
        if self._following:
            return
        self._following = True
        trio.lowlevel.spawn_system_task(self._follower, name="rcfs follow /texts")

    async def _follower(self) -> None:
        try:
            while self._readers > 0:
                await trio.sleep(FOLLOW_EVERY)
                try:
                    await self.refresh(self.folder)
                except Exception as exc:  # noqa: BLE001 - a failed refresh is retried next time
                    log.debug("texts: refresh while following failed: %s", exc)
        finally:
            self._following = False

    # appends ---------------------------------------------------------------------------------
    async def write(self, handle: int, offset: int, data: bytes) -> int:
        w = self._handles.get(handle)
        if not isinstance(w, _Append):
            raise Refused(errno.EBADF)
        if w.error is not None:
            raise w.error
        if w.finished:
            raise Refused(errno.EBADF, f"/texts/{w.conv.name}: this append was already sent")
        name = f"/texts/{w.conv.name}"
        if w.base is None:
            w.base = offset  # O_APPEND: the kernel writes at what it takes for the end
        if offset != w.base + len(w.buf):
            w.error = Refused(errno.EPERM, f"{name}: a write at byte {offset}, not at the end: {APPEND_ONLY}; "
                                           "nothing sent")
            raise w.error
        try:
            text = w.decoder.decode(data, final=False)
        except UnicodeDecodeError:
            w.error = Refused(errno.EILSEQ, f"{name}: the text is not UTF-8; nothing sent")
            raise w.error from None
        w.units += utf16_units(text)
        w.tail = (w.tail + text)[-2:]
        # One trailing newline is not part of the message. Refused at the write that makes
        # the text too long for good, not at close: a shell ignores the error of the close
        # that ends `echo ... >> f`, so only a failed write reaches the user.
        ending = 2 if w.tail == "\r\n" else 1 if w.tail.endswith("\n") else 0
        if w.units - ending > SMS_MAX_UNITS:
            w.error = Refused(errno.EMSGSIZE, f"{name}: longer than one SMS ({SMS_MAX_UNITS} UTF-16 code "
                                              "units, the API's limit); nothing sent")
            raise w.error
        w.buf += data
        return len(data)

    async def truncate(self, node: File, size: int) -> None:
        raise Refused(errno.EPERM, f"/texts/{node.name}: cannot truncate: {APPEND_ONLY}")

    async def rename(self, folder: Folder, name: str, new_folder: Folder, new_name: str) -> None:
        raise Refused(errno.EPERM, f"/texts: cannot rename {name!r} to {new_name!r} (an editor saving?): "
                                   f"{APPEND_ONLY}")

    async def unlink(self, folder: Folder, name: str) -> None:
        raise Refused(errno.EPERM, f"/texts: cannot remove {name!r}: {APPEND_ONLY}")

    async def touch(self, node: Node, mtime: float | None) -> None:
        """`touch` of a transcript sends its failed appends again (as in the outbox);
        otherwise it changes nothing, and is no error."""
        if not isinstance(node, File) or self.spool is None:
            return
        failed = [i for i in self.items.values() if i.path and i.path[0] == node.name and i.state == "failed"]
        for item in failed:
            item.state = "queued"
            item.attempts = 0
            item.next_attempt = 0.0
            item.error = item.message_id = item.delivery_status = None
            item.history.append([time.time(), "queued", "touched"])
            await trio.to_thread.run_sync(self.spool.save, item)
            log.info("texts: /texts/%s: a failed text queued again (touched)", node.name)
        if failed:
            self.on_queued()

    async def create(self, folder: Folder, name: str, flags: int, pid: int) -> tuple[File, Opened]:
        if folder is not self.folder:
            raise Refused(errno.EACCES, f"cannot create {name!r} here")
        if self.read_only:
            raise self.refuse(f"cannot create {name!r}")
        if not name.endswith(SUFFIX):
            # Editors' temporary and backup files, a save by rename: none of it can be a text.
            raise Refused(errno.EPERM, f"/texts: cannot create {name!r}: {APPEND_ONLY}")
        canonical, mine, others = self._canonical(name)
        conv = self._conversation(canonical, mine, others)
        if name != canonical:
            folder.aliases[name] = conv.node
        log.info("texts: new conversation %s", canonical)
        opened = await self.open(conv.node, (flags | os.O_APPEND) & ~os.O_TRUNC, pid)
        return conv.node, opened

    async def flush(self, handle: int) -> None:
        w = self._handles.get(handle)
        if isinstance(w, _Append) and not w.finished and not self._open_elsewhere(w):
            await self._finish(w)

    async def release(self, handle: int) -> None:
        state = self._handles.pop(handle, None)
        if isinstance(state, _Reading):
            self._readers -= 1
        elif isinstance(state, _Append) and not state.finished:
            try:
                await self._finish(state)
            except Refused as exc:
                log.warning("texts: %s", exc)

    def _open_elsewhere(self, w: _Append) -> bool:
        """Whether the writing process holds another descriptor of this file: the shell's
        `>>` opens the file, dup2()s it onto stdout and closes the original before a byte
        is written, so only the last close ends the append. Only readlink() on /proc: it
        never calls into this filesystem (a stat would). As `SpooledOwner._open_elsewhere`."""
        node = w.conv.node
        if not w.pid or not self.mount_target or node.parent is None:
            return False
        # The link shows the name the file was opened by: its own, or a spelling that
        # found it (`(415) 555-0123.txt`).
        folder = node.parent
        spellings = {node.name} | {alias for alias, target in folder.aliases.items() if target is node}
        where = os.path.join(self.mount_target, *self._path_parts(folder))
        paths = {os.path.join(where, name) for name in spellings}
        try:
            fds = os.listdir(f"/proc/{w.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{w.pid}/fd/{fd}") in paths:
                    return True
            except OSError:
                continue
        return False

    @staticmethod
    def _path_parts(node: Node) -> list[str]:
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return list(reversed(parts))

    async def _finish(self, w: _Append) -> None:
        """The last close of an append: check the whole text, spool it durably, queue it."""
        w.finished = True
        if w.error is not None:
            raise w.error
        name = f"/texts/{w.conv.name}"
        try:
            w.decoder.decode(b"", final=True)
            text = sms_text(bytes(w.buf))
        except UnicodeDecodeError:
            raise Refused(errno.EILSEQ, f"{name}: the text is not UTF-8 (it ends inside a character); "
                                        "nothing sent") from None
        if not text:
            if w.buf:
                log.info("texts: %s: an empty append (a newline alone); nothing sent", name)
            return
        if utf16_units(text) > SMS_MAX_UNITS:
            raise Refused(errno.EMSGSIZE, f"{name}: {utf16_units(text)} UTF-16 code units, longer than one SMS "
                                          f"({SMS_MAX_UNITS}, the API's limit); nothing sent")
        conv = w.conv
        item = Item(id=new_item_id(), channel="sms", recipient=conv.others[0], path=[conv.name], kind="file",
                    state="queued", options={"to": ",".join(conv.others), "from": conv.mine})
        item.parts = [Part(name=conv.name, data=f"{item.id}-0")]
        item.history.append([time.time(), "queued", "appended"])
        try:
            # The bytes as written (the sender takes the text from them as `sms_text` does here).
            await trio.to_thread.run_sync(self._spool_item, item, bytes(w.buf))
        except OSError as exc:
            why = "the spool's disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise Refused(exc.errno or errno.EIO, f"{name}: cannot spool the text: {why}; nothing sent") from None
        self.items[item.id] = item
        log.info("texts: %s: one SMS of %d characters queued to %s from %s", name, len(text),
                 ", ".join(conv.others), conv.mine or "the default number")
        self.on_queued()

    def _spool_item(self, item: Item, data: bytes) -> None:
        """The text's bytes fsync'd, then its journal: only then is the append promised."""
        assert self.spool is not None
        part = item.parts[0]
        fd = self.spool.open_part(part.data)
        try:
            os.write(fd, data)
            self.spool.seal_part(fd, part)
        finally:
            os.close(fd)
        try:
            self.spool.save(item)
        except OSError:
            self.spool.remove_part(part.data)
            raise

    # for the sender ---------------------------------------------------------------------------
    def options_for(self, item: Item) -> dict[str, str]:
        return {"from": item.options.get("from", "")}

    def final(self, item: Item) -> bool:
        return item.state in FINAL_STATES
