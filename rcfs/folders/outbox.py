"""/outbox: what happens when a file is written here. It is sent as a fax or an MMS.

The tree (everything a person does here is a plain file operation):

    /outbox/STATUS.txt                 every item of the outbox, one line each
    /outbox/fax/  /outbox/mms/         the two channels, always there
    /outbox/fax/+14155550123/          a recipient: `mkdir` with any common spelling of
                                       the number ((415) 555-0123, 14155550123, ...); the
                                       folder is named in E.164, the spelling used still
                                       finds it. An invalid number: EINVAL.
        OPTIONS.txt                    options for what is sent from this folder (a
                                       commented template; edit it, errors: EINVAL at close)
        STATUS.txt                     this recipient's items and what became of them
        contract.pdf                   one file = one fax (one MMS), sent once it has been
                                       closed and left alone for the settle time
        docs/                          a folder copied in: each file in it is sent alone
        offer.draft/                   a draft: collects several files (and its own
                                       OPTIONS.txt); nothing is sent until it is renamed
                                       without `.draft` (`mv offer.draft offer`): then all
                                       its files go as ONE fax (MMS), in name order

When a file is closed its type is sniffed from its bytes (`rcfs.mime`) and checked
against the channel, its bytes are fsync'd into the spool (`rcfs.spool`) and journalled:
only then does `close` succeed. A wrong type is refused by `write()` as soon as the first
bytes show it (else by `close`): EMEDIUMTYPE; too big: EFBIG; spool disk full: ENOSPC.
An empty file is kept (`touch`, `mktemp`, `: >` make one to fill later) and never sent
while empty.

Settle before sending (after rclone's VFS write-back): a closed file is `settling`, and
goes to the sender only once it has been left alone for `settle` seconds (the mount's
`--outbox-settle`). Reopening it for writing, truncating, touching or renaming it starts
the wait again; the name it has when the wait ends is the name it is sent under; `rm`
cancels it; a rename onto OPTIONS.txt is an options edit. Programs that write a
temporary file and rename it (sed -i, Python's atomic replace, mktemp, office suites)
thus send what they meant, once, under the final name. Hidden and temporary names
(rsync's `.name.XXXXXX`, `name~`, `#name#`, swap files, and the names programs give
their temporaries: sed's `sedXXXXXX`, mktemp's `tmp.XXXXXXXXXX`, Python's `tmpXXXXXXXX`,
`spooled.is_temporary`) are held however long they wait, and never sent under that
name: after a crash between such a program's close and its rename, the temporary stays
held (STATUS.txt says so) until it is renamed (then sent) or removed.
A file written again gets a new spool part (copy on write): until that writer closes,
the journal still promises the earlier content, so a crash never sends half a rewrite.
The sender (`rcfs.sender`) does the rest. The write, check and spool steps are shared
with /greetings (`rcfs.folders.spooled`).

`rm` of an item still waiting cancels it (nothing is sent); `rm` of a sent or failed
item clears it from the view; `touch` (or renaming) a failed item sends it again.
Writing over an item already queued or sent (`cp new.pdf same.pdf`) makes a new item
in its place, sent like any other; the old one leaves the outbox (a sent fax stays in
/faxes; a queued one is cancelled).
Status: STATUS.txt files, and `user.rc.*` xattrs on every item.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import logging
import os
import secrets
import time
from typing import Callable

import trio

from .. import mime
from ..phone import InvalidNumber, to_e164
from ..spool import FINAL_STATES, Item, Part, Spool, new_item_id
from ..tree import File, Folder, Node, Tree
from .base import Opened, Refused
from .spooled import LocalRead as _Reader, SpooledOwner, SpooledWriter as _Writer, is_temporary

log = logging.getLogger(__name__)

CHANNELS = ("fax", "mms")
DRAFT_SUFFIX = ".draft"
STATUS_NAME = "STATUS.txt"
OPTIONS_NAME = "OPTIONS.txt"
OPTIONS_MAX = 64 * 1024
SETTLE = 5.0  # seconds an item stays closed and untouched before it is sent (rclone: 5 s)


# The options each channel understands: key -> (what it means, check(value) -> error or None)
_RESOLUTIONS = ("High", "Low")


def _check_resolution(v: str) -> str | None:
    return None if v.capitalize() in _RESOLUTIONS else "resolution is High (200 dpi) or Low (100 dpi)"


def _check_cover(v: str) -> str | None:
    return None if v.isdigit() and (int(v) <= 13 or 15 <= int(v) <= 28) else \
        "cover is 0 (none), 1-13 (English templates) or 15-28"


def _check_cover_text(v: str) -> str | None:
    return None if len(v) <= 1024 else "cover_text is at most 1024 characters"


def _check_text(v: str) -> str | None:
    units = len(v.encode("utf-16-le")) // 2
    return None if units <= 1000 else "text is at most 1000 characters"


def _check_from(v: str) -> str | None:
    try:
        to_e164(v)
    except InvalidNumber as exc:
        return f"from: {exc}"
    return None


OPTION_KEYS: dict[str, dict[str, tuple[str, Callable[[str], str | None]]]] = {
    "fax": {
        "resolution": ("High (200 dpi) or Low (100 dpi, the service's default)", _check_resolution),
        "cover": ("cover page: 0 = none, 1-13 = a template; empty = your default cover page", _check_cover),
        "cover_text": ("text printed on the cover page (at most 1024 characters)", _check_cover_text),
    },
    "mms": {
        "text": ("the message text sent with the attachments (at most 1000 characters)", _check_text),
        "from": ("the sender: one of your numbers with the MMS feature; empty = the first one",
                 _check_from),
    },
}


def options_template(channel: str) -> str:
    lines = [f"# Options for every {channel.upper()} sent from this folder. Remove the # to use a line.",
             "# Format: key = value. A .draft folder can have its own OPTIONS.txt.", ""]
    for key, (meaning, _) in OPTION_KEYS[channel].items():
        lines.append(f"# {meaning}")
        lines.append(f"#{key} = ")
        lines.append("")
    return "\n".join(lines)


def parse_options(channel: str, text: str) -> dict[str, str]:
    """`key = value` lines; comments (#) and blank lines ignored. ValueError says why."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            raise ValueError(f"line {number}: expected 'key = value', got {line[:60]!r}")
        known = OPTION_KEYS[channel]
        if key not in known:
            raise ValueError(f"line {number}: unknown option {key!r} (known: {', '.join(known)})")
        if value:
            problem = known[key][1](value)
            if problem:
                raise ValueError(f"line {number}: {problem}")
            values[key] = value
    return values


@dataclasses.dataclass
class _TextWriter:
    """OPTIONS.txt being written: kept in memory (small), checked at close."""

    node: File
    target: "Recipient | Item"
    channel: str
    data: bytearray = dataclasses.field(default_factory=bytearray)
    pid: int = 0  # the process that opened it (flush waits for its last descriptor)
    dirty: bool = False  # opened with O_TRUNC or written: applied at the last close


@dataclasses.dataclass
class Recipient:
    channel: str
    number: str
    folder: Folder
    options_text: str = ""
    groups: list[str] = dataclasses.field(default_factory=list)  # plain subfolders

    @property
    def options(self) -> dict[str, str]:
        try:
            return parse_options(self.channel, self.options_text)
        except ValueError:
            return {}


class OutboxOwner(SpooledOwner):
    """Owns /outbox: recipients, items and their files; hands complete items to the sender."""

    name = "outbox"
    empty_allowed = True
    read_only_reason = "takes files only inside a recipient folder: mkdir /outbox/fax/NUMBER first"

    def __init__(self, tree: Tree, folder: Folder, spool: Spool, *, default_region: str = "US",
                 on_queued: Callable[[], None] = lambda: None, settle: float = SETTLE) -> None:
        super().__init__(tree, folder, spool, on_queued=on_queued)
        self.default_region = default_region
        self.settle = settle
        self._options_pending: dict[str, File] = {}  # item id -> OPTIONS.txt it was renamed onto, still open
        self.recipients: dict[tuple[str, str], Recipient] = {}
        self.channel_folders: dict[str, Folder] = {}
        for channel in CHANNELS:
            self.channel_folders[channel] = tree.mkdir(folder, channel, key=f"outbox:{channel}", writable=True)
        self._status_node(folder, "outbox:status")
        self._restore()

    # restoring after a (re)mount ---------------------------------------------------------
    def _restore(self) -> None:
        for entry in self.spool.load_folders():
            try:
                rcp = self._add_recipient(str(entry["channel"]), str(entry["number"]), save=False)
            except (KeyError, ValueError, Refused) as exc:
                log.error("outbox: ignoring a recipient folder in the spool: %s", exc)
                continue
            rcp.options_text = str(entry.get("options", ""))
            for group in entry.get("groups", []):
                self._group_folder(rcp, str(group), save=False)
        for item in self.spool.load():
            try:
                self._place(item)
            except (KeyError, ValueError, Refused) as exc:
                log.error("outbox: cannot place item %s (%s); it stays in the spool", item.id, exc)
                continue
            if item.kind == "file" and item.state in ("held", "settling", "queued") \
                    and any(is_temporary(n) for n in item.path):
                # A program's temporary file, closed but never renamed: rcfs (or the
                # program) stopped between the two (sed -i's `sedXXXXXX` of OPTIONS.txt).
                # What it meant to send is unknown, so nothing is: it is held, visibly,
                # until renamed or removed. (Its journal says `held` already, unless an
                # rcfs that did not know the name as a temporary's wrote it.)
                if item.state != "held":
                    item.state = "held"
                    item.history.append([time.time(), "held", "a temporary file's name after a restart: not sent"])
                    self.spool.save(item)
                log.warning("outbox: %s to %s has a temporary file's name (a program stopped before "
                            "renaming it?): held, not sent; rename it to send it, or rm it",
                            "/".join(item.path), item.recipient)
            if item.state == "settling":
                # Promised before the crash or unmount: it goes out after what is left of
                # its wait (never longer than this mount's settle time).
                item.next_attempt = min(item.next_attempt, time.time() + self.settle)
            self.items[item.id] = item
        waiting = self.waiting_count()
        if waiting:
            log.info("outbox: %d item(s) from an earlier mount waiting to be sent", waiting)

    def _place(self, item: Item) -> None:
        rcp = self.recipients.get((item.channel, item.recipient)) or \
            self._add_recipient(item.channel, item.recipient, save=True)
        parent = rcp.folder
        *dirs, leaf = item.path
        for d in dirs:
            parent = self._group_folder(rcp, d, save=False)
        if item.kind == "bundle":
            self._bundle_folder(parent, item, leaf)
        else:
            self._file_node(parent, item, item.parts[0], leaf)

    # nodes ----------------------------------------------------------------------------------
    def _status_node(self, parent: Folder, key: str) -> File:
        node = File(key=key, name=STATUS_NAME, mtime=time.time(), size=0)
        return self.tree.add(parent, node)  # type: ignore[return-value]

    def _file_node(self, parent: Folder, item: Item, part: Part, name: str) -> File:
        node = File(key=f"outbox:part:{part.data}", name=name, mtime=item.mtime, size=part.size,
                    content_type=part.mime or None)
        # A file item can always be written over (a new version: `cp new.pdf same.pdf`);
        # the files of a sealed draft cannot.
        node.writable = item.kind == "file" or item.state == "held"
        added = self.tree.add(parent, node)
        assert isinstance(added, File)
        if item.kind == "file":
            self._item_nodes[item.id] = added
        return added

    def _bundle_folder(self, parent: Folder, item: Item, name: str) -> Folder:
        folder = self.tree.mkdir(parent, name, key=f"outbox:bundle:{item.id}",
                                 mtime=item.created, writable=True)
        self._item_nodes[item.id] = folder
        for part in item.parts:
            self._file_node(folder, item, part, part.name)
        self._options_node(folder, f"outbox:options:{item.id}")
        return folder

    def _options_node(self, parent: Folder, key: str) -> File:
        node = File(key=key, name=OPTIONS_NAME, mtime=time.time(), size=0)
        node.writable = True
        return self.tree.add(parent, node)  # type: ignore[return-value]

    def _add_recipient(self, channel: str, number: str, *, save: bool) -> Recipient:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        e164 = to_e164(number, self.default_region)
        existing = self.recipients.get((channel, e164))
        if existing is not None:
            return existing
        folder = self.tree.mkdir(self.channel_folders[channel], e164, key=f"outbox:{channel}:{e164}",
                                 writable=True)
        rcp = Recipient(channel, e164, folder, options_text=options_template(channel))
        self.recipients[(channel, e164)] = rcp
        self._status_node(folder, f"outbox:status:{channel}:{e164}")
        self._options_node(folder, f"outbox:options:{channel}:{e164}")
        if save:
            self._save_recipients()
        return rcp

    def _group_folder(self, rcp: Recipient, name: str, *, save: bool) -> Folder:
        folder = self.tree.mkdir(rcp.folder, name, key=f"outbox:group:{rcp.channel}:{rcp.number}:{name}",
                                 writable=True)
        if name not in rcp.groups:
            rcp.groups.append(name)
            if save:
                self._save_recipients()
        return folder

    def _save_recipients(self) -> None:
        self.spool.save_folders([
            {"channel": r.channel, "number": r.number, "options": r.options_text, "groups": r.groups}
            for r in self.recipients.values()])

    # where a node is ----------------------------------------------------------------------
    def _recipient_of(self, folder: Folder) -> tuple[Recipient, list[str]] | None:
        """The recipient folder `folder` is in (or is), and the names below it."""
        path: list[str] = []
        node: Folder | None = folder
        while node is not None and node is not self.folder:
            parent = node.parent
            if parent is not None and parent.parent is self.folder and parent.name in CHANNELS:
                rcp = self.recipients.get((parent.name, node.name))
                return (rcp, list(reversed(path))) if rcp else None
            path.append(node.name)
            node = parent
        return None

    def _item_of_folder(self, folder: Folder) -> Item | None:
        if folder.key.startswith("outbox:bundle:"):
            return self.items.get(folder.key.split(":", 2)[2])
        return None

    def _item_of_file(self, node: File) -> tuple[Item, Part] | None:
        if not node.key.startswith("outbox:part:"):
            return None
        data = node.key.split(":", 2)[2]
        item_id = data.rsplit("-", 1)[0]
        item = self.items.get(item_id)
        if item is None:
            return None
        for part in item.parts:
            if part.data == data:
                return item, part
        return None

    # listing and attributes --------------------------------------------------------------------
    def presented_size(self, node: File) -> int:
        # Generated files are sized as they are now: `>>` appends at the size the kernel
        # was given.
        if node.name == STATUS_NAME and node.key.startswith("outbox:status"):
            node.size = len(self._status_text(node))
        elif node.key.startswith("outbox:options:"):
            node.size = len(self._options_of(node).encode())
        return super().presented_size(node)

    def attr_timeout(self, node: Node) -> float | None:
        # Generated files change with every send; items change state and size while written.
        return 0.0 if isinstance(node, File) else 1.0

    def xattrs(self, node: Node) -> dict[str, str]:
        values = dict(node.xattrs)
        item = None
        if isinstance(node, File):
            found = self._item_of_file(node)
            if found:
                item, part = found
                values["user.rc.size"] = str(part.size)
                values["user.rc.sha256"] = part.sha256
                values["user.rc.content_type"] = part.mime
        elif isinstance(node, Folder):
            item = self._item_of_folder(node)
        if item is not None:
            values.update({
                "user.rc.state": item.state,
                "user.rc.channel": item.channel,
                "user.rc.to": item.recipient,
                "user.rc.attempts": str(item.attempts),
                "user.rc.message_id": item.message_id or "",
                "user.rc.delivery_status": item.delivery_status or "",
                "user.rc.fax_error": item.fax_error or "",
                "user.rc.error": item.error or "",
            })
        return values

    def waiting_count(self) -> int:
        return sum(1 for i in self.items.values() if i.state in ("settling", "queued", "sending"))

    def _describe(self, item: Item) -> str:
        when = dt.datetime.fromtimestamp(item.sent_at or item.created).strftime("%Y-%m-%d %H:%M:%S")
        name = "/".join(item.path) + ("/" if item.kind == "bundle" else "")
        what = {"held": "held: a draft, sent once renamed without .draft" if item.kind == "bundle" else
                        "held, not sent: a temporary file's name (left by a program that stopped before "
                        "renaming it?): rename it (mv) to send it, or rm it",
                "writing": "being written",
                "empty": "empty: not sent while empty (write into it to send it)",
                "settling": f"settling: sent once left alone for {self.settle:g} s "
                            "(rename, rewrite or rm it until then)",
                "queued": "waiting to be sent",
                "sending": "sending",
                "sent": f"sent, message {item.message_id}, delivery {item.delivery_status or 'pending'}",
                "delivered": f"delivered ({item.delivery_status}), message {item.message_id}",
                "failed": f"FAILED: {item.error}"}.get(item.state, item.state)
        if item.state == "queued" and item.attempts:
            what += f" (attempt {item.attempts + 1}; last: {item.error})"
        return f"{when}  {item.channel} to {item.recipient}  {name}  {what}"

    def _status_text(self, node: File) -> bytes:
        key = node.key
        if key == "outbox:status":
            items = list(self.items.values())
            head = "rcfs outbox: every item, oldest first"
        else:
            _, _, channel, number = key.split(":", 3)
            items = [i for i in self.items.values() if i.channel == channel and i.recipient == number]
            head = f"{channel.upper()} to {number}"
        counts = {s: sum(1 for i in items if i.state == s)
                  for s in ("writing", "settling", "queued", "sending", "sent", "delivered", "failed", "held",
                            "empty")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing yet"
        lines = [head, summary, ""] + [self._describe(i) for i in sorted(items, key=lambda i: i.id)]
        return ("\n".join(lines) + "\n").encode()

    def _options_of(self, node: File) -> str:
        parts = node.key.split(":")
        if len(parts) == 3:  # outbox:options:<item id>
            item = self.items.get(parts[2])
            return item.options.get("__text__", options_template(item.channel)) if item else ""
        rcp = self.recipients.get((parts[2], parts[3]))
        return rcp.options_text if rcp else ""

    # reads ---------------------------------------------------------------------------------------
    async def open(self, node: File, flags: int, pid: int) -> Opened:
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        if node.key.startswith("outbox:status"):
            if writing:
                raise Refused(errno.EACCES, f"{STATUS_NAME} is written by rcfs")
            return Opened(self._handle(_Reader(data=self._status_text(node))), direct_io=True, keep_cache=False)
        if node.key.startswith("outbox:options:"):
            text = self._options_of(node)
            if writing:
                target = self._options_target(node)
                writer = _TextWriter(node, target, self._channel_of_target(target), pid=pid,
                                     dirty=bool(flags & os.O_TRUNC))
                if not flags & os.O_TRUNC:
                    writer.data += text.encode()
                return Opened(self._handle(writer), direct_io=True, keep_cache=False)
            return Opened(self._handle(_Reader(data=text.encode())), direct_io=True, keep_cache=False)
        found = self._item_of_file(node)
        if found is None:
            raise Refused(errno.ENOENT)
        item, part = found
        if writing:
            if self._writer_of(node) is not None:
                raise Refused(errno.EBUSY, f"{node.name!r} is being written by another program")
            if item.state == "sending":
                raise Refused(errno.EBUSY, f"{node.name!r} is being sent right now; write the new version "
                                           "once STATUS.txt shows it sent")
            if item.kind == "bundle" and item.state != "held":
                raise Refused(errno.EACCES, f"{node.name!r} belongs to a sealed draft ({item.state}); "
                                            "copy the new version into a new .draft folder")
            if item.kind == "file" and item.state not in ("held", "settling", "empty"):
                writer = await self._new_version(node, item, flags)  # queued, sent, delivered, failed
            else:
                writer = await self._rewrite(node, item, part, flags)
            writer.pid = pid
            return Opened(self._handle(writer), keep_cache=False)
        return Opened(self._handle(_Reader(part=part)), keep_cache=False)

    def _options_target(self, node: File) -> "Recipient | Item":
        parts = node.key.split(":")
        if len(parts) == 3:
            item = self.items.get(parts[2])
            if item is None or item.state != "held":
                raise Refused(errno.EACCES, "this draft was sealed; its options are fixed")
            return item
        return self.recipients[(parts[2], parts[3])]

    @staticmethod
    def _channel_of_target(target: "Recipient | Item") -> str:
        return target.channel

    async def read(self, handle: int, offset: int, length: int) -> bytes:
        state = self._handles.get(handle)
        if isinstance(state, _TextWriter):
            return bytes(state.data[offset: offset + length])
        return await self._read_local(state, offset, length)

    # writes ----------------------------------------------------------------------------------------
    async def create(self, folder: Folder, name: str, flags: int, pid: int) -> tuple[File, Opened]:
        where = self._recipient_of(folder)
        if where is None:
            raise Refused(errno.EACCES, f"cannot create {name!r} here: files go into a recipient folder "
                                        "(mkdir /outbox/fax/NUMBER or /outbox/mms/NUMBER first)")
        rcp, below = where
        if name in (STATUS_NAME,):
            raise Refused(errno.EACCES, f"{STATUS_NAME} is written by rcfs")
        existing = self.tree.child(folder, name)
        if existing is not None:
            if isinstance(existing, File) and existing.key.startswith("outbox:options:"):
                return existing, await self.open(existing, flags | os.O_TRUNC | os.O_WRONLY, pid)
            raise Refused(errno.EEXIST, f"{name!r} exists")
        bundle = self._item_of_folder(folder)
        if bundle is not None:
            if bundle.state != "held":
                raise Refused(errno.EACCES, f"{folder.name!r} was sealed (it is {bundle.state}); "
                                            "files can be added only to a .draft folder")
            limit = mime.channel(rcp.channel).max_files
            if limit is not None and len(bundle.parts) + 1 > limit:
                raise Refused(errno.EFBIG, f"an {rcp.channel.upper()} carries at most {limit} files; "
                                           f"{folder.name!r} has {len(bundle.parts)}")
            item = bundle
            part = Part(name=name, data=f"{item.id}-{secrets.token_hex(4)}")
        else:
            item = Item(id=new_item_id(), channel=rcp.channel, recipient=rcp.number, path=below + [name])
            part = Part(name=name, data=f"{item.id}-0")
        try:
            fd = self.spool.open_part(part.data)
        except OSError as exc:
            raise Refused(exc.errno or errno.EIO, f"cannot spool {name!r}: {exc.strerror}") from None
        node = File(key=f"outbox:part:{part.data}", name=name, mtime=time.time(), size=0)
        node.writable = True
        self.tree.add(folder, node)
        writer = _Writer(node=node, item=item, part=part, fd=fd, channel=rcp.channel, pid=pid)
        if bundle is None:
            self.items.setdefault(item.id, item)
            item.state = "writing"
            self._item_nodes[item.id] = node
        log.info("outbox: receiving %s for %s %s", "/".join(below + [name]), rcp.channel, rcp.number)
        return node, Opened(self._handle(writer), keep_cache=False)

    def _writers_into(self, item: Item) -> int:
        return sum(1 for h in self._handles.values() if isinstance(h, _Writer) and h.item is item and not h.finished)

    async def _rewrite(self, node: File, item: Item, part: Part, flags: int) -> _Writer:
        """A closed file opened for writing again (`>>`, an editor saving, rsync --inplace)
        before it was sent: the wait starts again at its next close."""
        if item.kind == "bundle":
            # A draft's file: in place (a draft sends nothing until it is sealed).
            fd = os.open(self.spool.data_path(part.data), os.O_RDWR | os.O_CLOEXEC)
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
            writer = _Writer(node=node, item=item, part=part, fd=fd, channel=item.channel,
                             dirty=bool(flags & os.O_TRUNC))
            writer.head += os.pread(fd, mime.SNIFF_WINDOW, 0)
            return writer
        # A file item: a new part (copy on write). Its journal keeps promising the
        # content of its last close until this writer closes successfully.
        new = Part(name=node.name, data=f"{item.id}-{secrets.token_hex(4)}")
        writer = await self._open_version(node, item, new, part, flags)
        writer.replaces, writer.was = part, item.state
        item.state = "writing"  # in memory only: the sender leaves it alone
        return writer

    async def _new_version(self, node: File, old: Item, flags: int, length: int | None = None) -> _Writer:
        """Writing over an item that is queued or already sent (`cp other.pdf same.pdf`):
        a new item on the same file. The old one steps aside now and is cleared (a sent
        fax stays in /faxes) or cancelled (queued) once the new version closes; if the new
        version is refused or nothing was written, the old one comes back."""
        item = Item(id=new_item_id(), channel=old.channel, recipient=old.recipient, path=list(old.path),
                    state="writing")
        writer = await self._open_version(node, item, Part(name=node.name, data=f"{item.id}-0"),
                                          old.parts[0], flags, length)
        writer.displaced = old
        self.items.pop(old.id, None)  # the sender sees the old one no more
        self._item_nodes.pop(old.id, None)
        self.items[item.id] = item
        self._item_nodes[item.id] = node
        node.key = f"outbox:part:{writer.part.data}"  # the file is the new item's now (same inode)
        log.info("outbox: %s (%s) is being written again: a new %s", "/".join(old.path), old.state, old.channel)
        return writer

    async def _open_version(self, node: File, item: Item, part: Part, old: Part, flags: int,
                            length: int | None = None) -> _Writer:
        """A new spool part for `item`, starting as a copy of `old` unless O_TRUNC."""
        try:
            fd = self.spool.open_part(part.data)
        except OSError as exc:
            raise Refused(exc.errno or errno.EIO, f"cannot spool {node.name!r}: {exc.strerror}") from None
        try:
            if not flags & os.O_TRUNC:
                await trio.to_thread.run_sync(self.spool.copy_part, old.data, fd, length)
        except OSError as exc:
            os.close(fd)
            self.spool.remove_part(part.data)
            raise Refused(exc.errno or errno.EIO, f"cannot spool {node.name!r}: {exc.strerror}") from None
        writer = _Writer(node=node, item=item, part=part, fd=fd, channel=item.channel,
                         dirty=bool(flags & os.O_TRUNC))
        writer.head += os.pread(fd, mime.SNIFF_WINDOW, 0)
        node.size = os.fstat(fd).st_size
        return writer

    async def write(self, handle: int, offset: int, data: bytes) -> int:
        state = self._handles.get(handle)
        if isinstance(state, _TextWriter):
            end = offset + len(data)
            if end > OPTIONS_MAX:
                raise Refused(errno.EFBIG, f"{OPTIONS_NAME} is at most {OPTIONS_MAX} bytes")
            if len(state.data) < end:
                state.data.extend(b"\0" * (end - len(state.data)))
            state.data[offset:end] = data
            state.dirty = True
            return len(data)
        if not isinstance(state, _Writer):
            raise Refused(errno.EBADF)
        return await self._write_spooled(state, offset, data)

    async def truncate(self, node: File, size: int) -> None:
        if self._truncate_writer(node, size):
            return
        if node.key.startswith("outbox:options:"):
            if size == 0:
                return  # O_TRUNC before a rewrite: the open that follows starts empty
            raise Refused(errno.EINVAL, f"{OPTIONS_NAME}: write it whole")
        found = self._item_of_file(node)
        if found is None:
            raise Refused(errno.EACCES, f"{node.name!r} cannot be changed")
        item, part = found
        if item.state == "sending":
            raise Refused(errno.EBUSY, f"{node.name!r} is being sent right now")
        if item.kind == "bundle":
            if item.state != "held":
                raise Refused(errno.EACCES, f"{node.name!r} belongs to a sealed draft ({item.state})")
            os.truncate(self.spool.data_path(part.data), size)
            part.size = node.size = size
            return
        if size == part.size and item.state in ("held", "settling", "empty"):
            self._rest(item, "truncated")
            await self._save(item)
            return
        # A new version of the file with its first `size` bytes, checked like a close.
        flags = os.O_TRUNC if size == 0 else 0
        if item.state in ("held", "settling", "empty"):
            new = Part(name=node.name, data=f"{item.id}-{secrets.token_hex(4)}")
            writer = await self._open_version(node, item, new, part, flags, length=size)
            writer.replaces, writer.was = part, item.state
            item.state = "writing"
        else:
            writer = await self._new_version(node, item, flags, length=size)
        writer.dirty = True
        try:
            await self._finish(writer)
        finally:
            os.close(writer.fd)

    async def touch(self, node: Node, mtime: float | None) -> None:
        """`touch`, `cp -p`, rsync and gio set times (and modes): keep mtime (rsync compares
        it on the next run, so a sent file is not sent again); a failed item is retried;
        a settling one waits again."""
        item = None
        if isinstance(node, File):
            found = self._item_of_file(node)
            item = found[0] if found else None
        elif isinstance(node, Folder):
            item = self._item_of_folder(node)
        if mtime is not None:
            node.mtime = mtime
        if item is None or item.state == "writing":
            return
        if mtime is not None:
            item.mtime = mtime
        if item.state == "failed":
            self._requeue(item, "touched")
        elif item.state == "settling":
            self._rest(item, "touched")
        await self._save(item)

    async def flush(self, handle: int) -> None:
        state = self._handles.get(handle)
        if isinstance(state, _TextWriter):
            if self._open_elsewhere(state):
                return  # `echo x > OPTIONS.txt`: the shell's dup2 closes a first descriptor
            await self._finish_options(state)
        elif isinstance(state, _Writer):
            await self._flush_spooled(state)

    async def release(self, handle: int) -> None:
        state = self._handles.pop(handle, None)
        if isinstance(state, _Writer):
            await self._release_spooled(state)
        elif isinstance(state, _TextWriter):
            try:
                await self._finish_options(state)  # a last flush that was deferred
            except Refused as exc:
                log.warning("outbox: %s", exc)

    async def _finish_options(self, w: _TextWriter) -> None:
        """The options written so far take effect (at the last close of the writer)."""
        if not w.dirty:
            return
        w.dirty = False
        text = bytes(w.data).decode("utf-8", errors="replace")
        await self._set_options(w.target, w.channel, text)
        w.node.size = len(text.encode())

    async def _set_options(self, target: "Recipient | Item", channel: str, text: str) -> None:
        try:
            parse_options(channel, text)
        except ValueError as exc:
            raise Refused(errno.EINVAL, f"{OPTIONS_NAME}: {exc}; the previous options stay") from None
        if isinstance(target, Recipient):
            target.options_text = text
            await trio.to_thread.run_sync(self._save_recipients)
        else:
            target.options["__text__"] = text
            await self._save(target)
        log.info("outbox: options for %s %s updated", channel, target.number if isinstance(target, Recipient)
                 else "/".join(target.path))

    def _rest(self, item: Item, why: str) -> None:
        """A file item was closed, renamed, truncated or touched: from now on it waits the
        settle time again before it is sent (or is held: a temporary name; or kept: empty)."""
        if any(is_temporary(n) for n in item.path):
            state = "held"
        elif item.size == 0:
            state = "empty"
        elif self.settle > 0:
            state = "settling"
            item.next_attempt = time.time() + self.settle
        else:
            state = "queued"
            item.next_attempt = 0.0
        if state != item.state or state == "settling":
            item.history.append([time.time(), state, why])
        item.state = state

    async def settled(self, item: Item) -> None:
        """The sender found the item's wait over: it is queued for sending (journalled)."""
        if self.items.get(item.id) is not item or item.state != "settling":
            return
        if time.time() < item.next_attempt:
            return
        item.state = "queued"
        item.history.append([time.time(), "queued", "settled"])
        await self._save(item)
        log.info("outbox: %s to %s left alone for %g s: queued for sending", "/".join(item.path),
                 item.recipient, self.settle)

    async def _accept(self, w: _Writer) -> None:
        """A written file passed every check: place it in its item, journal it, let it settle."""
        item = w.item
        options = self._options_pending.pop(item.id, None)
        if options is not None:
            await self._options_from_closed(w, options)
            return
        if w.displaced is not None and not w.dirty:
            # Opened for writing over a sent item, but nothing was written: nothing changes.
            self._restore_displaced(w, "opened for writing and closed unchanged")
            return
        w.node.size = w.part.size
        w.node.content_type = w.part.mime or None
        if item.kind == "bundle":
            item.parts = [p for p in item.parts if p.data != w.part.data] + [w.part]
            item.parts.sort(key=lambda p: p.name)
        else:
            item.parts = [w.part]
            item.mtime = w.node.mtime
            w.node.key = f"outbox:part:{w.part.data}"  # a new version's part (same inode)
            self._rest(item, "closed")
        try:
            await self._save(item)
        except OSError as exc:
            w.error = Refused(exc.errno or errno.EIO, f"{w.node.name!r}: cannot journal: {exc.strerror}; not sent")
            self._drop(w, str(w.error))
            raise w.error from None
        # The journal now promises the new content; what it promised before can go.
        if w.replaces is not None and w.replaces.data != w.part.data:
            self.spool.remove_part(w.replaces.data)
        if w.displaced is not None:
            old = w.displaced
            w.displaced = None
            self.spool.delete(old)
            log.info("outbox: %s to %s %s: a new version was written over it", "/".join(old.path), old.recipient,
                     "cancelled, nothing was sent" if old.state in ("queued", "settling", "held")
                     else f"cleared from the outbox (it was {old.state}, message {old.message_id})")
        state = {"held": "kept, not sent (" + ("draft" if item.kind == "bundle" else "temporary name") + ")",
                 "empty": "kept empty, not sent while empty",
                 "settling": f"settling: sent if left alone for {self.settle:g} s",
                 "queued": "queued for sending"}.get(item.state, item.state)
        log.info("outbox: %s (%s, %d bytes) %s", "/".join(item.path), w.part.mime or "empty", w.part.size, state)
        if item.state in ("queued", "settling"):
            self.on_queued()  # the sender looks again (when the wait ends)

    async def _options_from_closed(self, w: _Writer, options: File) -> None:
        """A file renamed onto OPTIONS.txt while open has been closed: its text is the
        options (EINVAL at this close when they do not parse). Never sent either way."""
        item = w.item
        self.items.pop(item.id, None)
        self._item_nodes.pop(item.id, None)
        data = await trio.to_thread.run_sync(self.spool.part_bytes, w.part)
        self.spool.remove_part(w.part.data)
        text = data[:OPTIONS_MAX].decode("utf-8", errors="replace")
        log.info("outbox: %s renamed onto %s: an options edit, not sent", "/".join(item.path), OPTIONS_NAME)
        await self._set_options(self._options_target(options), item.channel, text)
        options.size = len(text.encode())

    def _restore_displaced(self, w: _Writer, why: str) -> None:
        """The item a new version was to replace comes back, unchanged, on its file."""
        old = w.displaced
        assert old is not None
        w.displaced = None
        self.spool.remove_part(w.part.data)
        self.items.pop(w.item.id, None)
        self._item_nodes.pop(w.item.id, None)
        w.node.key = f"outbox:part:{old.parts[0].data}"
        w.node.size = old.parts[0].size
        w.node.content_type = old.parts[0].mime or None
        self.items[old.id] = old
        self._item_nodes[old.id] = w.node
        log.info("outbox: %s: %s; it stays %s", "/".join(old.path), why, old.state)
        if old.state == "queued":
            self.on_queued()

    def _drop(self, w: _Writer, why: str) -> None:
        """A refused write changes nothing that was promised before it: a rewrite leaves
        the file as it was closed last, a new version over a sent item gives the file
        back to that item; a new file is forgotten."""
        self._options_pending.pop(w.item.id, None)
        if w.cancelled:  # removed while written: `unlink` forgot the item already
            self.spool.remove_part(w.part.data)
            return
        if w.displaced is not None:
            self._restore_displaced(w, f"the new version was refused ({why})")
            return
        if w.replaces is not None and w.item.kind == "file":
            self.spool.remove_part(w.part.data)
            item = w.item
            item.state = w.was
            w.node.size = w.replaces.size
            if item.state == "settling":
                self._rest(item, "a rewrite was refused")
            log.info("outbox: %s: the rewrite was refused (%s); it keeps what it had", "/".join(item.path), why)
            if item.state == "settling":
                self.on_queued()
            return
        super()._drop(w, why)

    def _requeue(self, item: Item, why: str) -> None:
        item.state = "queued"
        item.error = None
        item.fax_error = None
        item.attempts = 0
        item.next_attempt = 0.0
        item.message_id = None
        item.delivery_status = None
        item.history.append([time.time(), "queued", why])
        log.info("outbox: %s to %s queued again (%s)", "/".join(item.path), item.recipient, why)
        self.on_queued()

    # folders ------------------------------------------------------------------------------------------
    async def mkdir(self, folder: Folder, name: str) -> Folder:
        if folder is self.folder:
            raise Refused(errno.EACCES, "/outbox has two channels, fax and mms: mkdir /outbox/fax/NUMBER")
        if folder.parent is self.folder and folder.name in CHANNELS:
            try:
                number = to_e164(name, self.default_region)
            except InvalidNumber as exc:
                raise Refused(errno.EINVAL, f"mkdir /outbox/{folder.name}/{name}: {exc}") from None
            if (folder.name, number) in self.recipients:
                raise Refused(errno.EEXIST, f"recipient {number} exists")
            rcp = self._add_recipient(folder.name, number, save=False)
            await trio.to_thread.run_sync(self._save_recipients)
            if name != number:
                folder.aliases[name] = rcp.folder  # the spelling used keeps working
            log.info("outbox: recipient folder %s/%s", folder.name, number)
            return rcp.folder
        where = self._recipient_of(folder)
        if where is None:
            raise Refused(errno.EACCES, f"cannot make {name!r} here")
        rcp, below = where
        if below:
            raise Refused(errno.EPERM, f"{name!r}: folders go directly into a recipient folder (one level)")
        if self.tree.child(folder, name) is not None:
            raise Refused(errno.EEXIST, f"{name!r} exists")
        if name.endswith(DRAFT_SUFFIX) and len(name) > len(DRAFT_SUFFIX):
            item = Item(id=new_item_id(), channel=rcp.channel, recipient=rcp.number, path=[name],
                        kind="bundle", state="held")
            self.items[item.id] = item
            await self._save(item)
            log.info("outbox: draft %s for %s %s: add files, then rename it without %s to send them as one",
                     name, rcp.channel, rcp.number, DRAFT_SUFFIX)
            return self._bundle_folder(folder, item, name)
        group = self._group_folder(rcp, name, save=False)
        await trio.to_thread.run_sync(self._save_recipients)
        return group

    def _items_below(self, folder: Folder) -> list[Item]:
        out = []
        for item in self.items.values():
            node = self._item_nodes.get(item.id)
            while node is not None:
                if node is folder:
                    out.append(item)
                    break
                node = node.parent
        return out

    async def rmdir(self, folder: Folder, name: str) -> None:
        node = self.tree.child(folder, name)
        if not isinstance(node, Folder):
            raise Refused(errno.ENOTDIR if node else errno.ENOENT)
        if folder is self.folder:
            raise Refused(errno.EACCES, "/outbox/fax and /outbox/mms are always there")
        bundle = self._item_of_folder(node)
        if bundle is not None:
            if bundle.state == "cancelled":
                self._forget(bundle, "removed")
                return
            if bundle.state == "held" and bundle.parts:
                raise Refused(errno.ENOTEMPTY, f"{name!r} still has files")
            if bundle.state == "sending":
                raise Refused(errno.EBUSY, f"{name!r} is being sent right now")
            self._forget(bundle, "cancelled, nothing was sent" if bundle.state in ("held", "queued") else "cleared")
            return
        if self._items_below(node):
            raise Refused(errno.ENOTEMPTY, f"{name!r} still has items (rm them first)")
        if any(isinstance(c, Folder) for c in node.children.values()):
            raise Refused(errno.ENOTEMPTY, f"{name!r} still has folders")
        where = self._recipient_of(node)
        if where is not None:
            rcp, below = where
            if not below:
                del self.recipients[(rcp.channel, rcp.number)]
            elif below[0] in rcp.groups:
                rcp.groups.remove(below[0])
            await trio.to_thread.run_sync(self._save_recipients)
        for child in list(node.children):
            self.tree.remove(node, child)
        self.tree.remove(folder, name)
        for alias, target in list(folder.aliases.items()):
            if target is node:
                del folder.aliases[alias]

    def _forget(self, item: Item, why: str) -> None:
        node = self._item_nodes.pop(item.id, None)
        if node is not None and node.parent is not None:
            if isinstance(node, Folder):
                for child in list(node.children):
                    self.tree.remove(node, child)
            self.tree.remove(node.parent, node.name)
        self.items.pop(item.id, None)
        self.spool.delete(item)
        log.info("outbox: %s to %s %s", "/".join(item.path), item.recipient, why)

    async def unlink(self, folder: Folder, name: str) -> None:
        node = self.tree.child(folder, name)
        if node is None:
            raise Refused(errno.ENOENT)
        if not isinstance(node, File):
            raise Refused(errno.EISDIR)
        if node.key.startswith(("outbox:status", "outbox:options:")):
            # rsync --delete and file managers may try: the file is rcfs's, it stays.
            return
        writer = self._writer_of(node)
        if writer is not None:
            writer.cancelled = True
            self.tree.remove(folder, name)
            if writer.item.kind == "file":
                self.items.pop(writer.item.id, None)
                self._item_nodes.pop(writer.item.id, None)
                # What an earlier close promised goes too (a rewrite's item, a sent item
                # being written over): its journal must not send it after a remount.
                self.spool.delete(writer.item)
                if writer.displaced is not None:
                    self.spool.delete(writer.displaced)
                    writer.displaced = None
            log.info("outbox: %s removed while being written; it will not be sent", name)
            return
        found = self._item_of_file(node)
        if found is None:
            self.tree.remove(folder, name)
            return
        item, part = found
        if item.state == "sending":
            raise Refused(errno.EBUSY, f"{name!r} is being sent right now; it can be cleared once sent")
        if item.kind == "bundle":
            if item.state == "held":
                item.parts.remove(part)
                self.spool.remove_part(part.data)
                self.tree.remove(folder, name)
                await self._save(item)
                return
            # A sealed draft is one message: removing any of its files cancels (or clears)
            # all of it at once; `rm -r` then removes the rest of the view one by one.
            if item.state != "cancelled":
                was = item.state
                item.state = "cancelled"
                self.spool.delete(item)
                log.info("outbox: %s to %s %s", "/".join(item.path), item.recipient,
                         "cancelled, nothing was sent" if was == "queued" else "cleared")
            self.tree.remove(folder, name)
            return
        self._forget(item, "cancelled, nothing was sent" if item.state in ("held", "queued", "settling", "empty")
                     else "cleared from the outbox")

    async def rename(self, folder: Folder, name: str, new_folder: Folder, new_name: str) -> None:
        node = self.tree.child(folder, name)
        if node is None:
            raise Refused(errno.ENOENT)
        src = self._recipient_of(folder)
        dst = self._recipient_of(new_folder)
        if src is None or dst is None or src[0] is not dst[0]:
            raise Refused(errno.EXDEV, "items move only within their recipient folder")  # mv copies
        if new_name == OPTIONS_NAME and isinstance(node, File) and new_folder is folder:
            await self._options_from_file(folder, node)  # sed -i, editors, Python's atomic replace
            return
        if new_name in (STATUS_NAME, OPTIONS_NAME) or node.key.startswith(("outbox:status", "outbox:options:")):
            raise Refused(errno.EACCES, f"{STATUS_NAME} and {OPTIONS_NAME} keep their names")
        if isinstance(node, Folder):
            await self._rename_folder(folder, node, new_folder, new_name)
            return
        assert isinstance(node, File)
        writer = self._writer_of(node)
        found = self._item_of_file(node)
        if found is None or writer is not None:
            if writer is None or writer.item.kind != "file":
                raise Refused(errno.EBUSY, f"{name!r} is still being written")
            # Renamed while still open (written, then renamed, then closed): it is sent
            # under the name it has at its last close and after its wait.
            if self._item_of_folder(new_folder) is not None:
                raise Refused(errno.EXDEV, "a file joins a draft by being copied into it")
            self._replace_target(new_folder, new_name, keep=node)
            self.tree.move(node, new_folder, new_name)
            writer.item.path = dst[1] + [new_name]
            writer.part.name = new_name
            return
        item, _ = found
        if item.kind == "bundle":
            if item.state != "held" or new_folder is not folder:
                raise Refused(errno.EACCES, "files of a draft are renamed only inside it, before it is sealed")
            self._replace_target(new_folder, new_name, keep=node)
            self.tree.move(node, new_folder, new_name)
            for p in item.parts:
                if p.data == found[1].data:
                    p.name = new_name
            await self._save(item)
            return
        if item.state == "sending":
            raise Refused(errno.EBUSY, f"{name!r} is being sent right now")
        if self._item_of_folder(new_folder) is not None:
            raise Refused(errno.EXDEV, "a file joins a draft by being copied into it")
        self._replace_target(new_folder, new_name, keep=node)
        self.tree.move(node, new_folder, new_name)
        rcp, below = dst
        item.path = below + [new_name]
        item.parts[0].name = new_name  # the name the recipient sees
        was = item.state
        if was in ("held", "settling", "empty"):
            self._rest(item, f"renamed to {new_name}")  # the wait starts again
        elif was == "queued" and any(is_temporary(n) for n in item.path):
            item.state = "held"
        elif was == "failed":
            self._requeue(item, "renamed")
        if item.state != was and item.state != "settling":
            item.history.append([time.time(), item.state, f"renamed to {new_name}"])
        await self._save(item)
        if item.state in ("queued", "settling") and was != "queued":
            log.info("outbox: %s %s (renamed from %s)", "/".join(item.path),
                     "queued for sending" if item.state == "queued" else
                     f"settling: sent if left alone for {self.settle:g} s", name)
            self.on_queued()

    async def _options_from_file(self, folder: Folder, node: File) -> None:
        """A file renamed onto OPTIONS.txt (sed -i's temporary, an editor's or Python's
        atomic save): its text becomes the options, and the file itself is gone. It is
        never sent, whether its text is accepted or not."""
        found = self._item_of_file(node)
        options = self.tree.child(folder, OPTIONS_NAME)
        writer = self._writer_of(node)
        if writer is not None:
            if writer.item.kind != "file" or writer.replaces is not None or writer.displaced is not None \
                    or not isinstance(options, File):
                raise Refused(errno.EBUSY, f"{node.name!r} is still being written; close it first")
            # GIO (gedit, `gio save`) renames its temporary before it closes it: the text
            # becomes the options at that close.
            self._options_target(options)
            self._options_pending[writer.item.id] = options
            self.tree.remove(folder, node.name)
            return
        if found is None or found[0].state not in ("held", "settling", "empty") or not isinstance(options, File):
            raise Refused(errno.EACCES, f"{OPTIONS_NAME} is replaced only by a file not yet sent")
        item, part = found
        target = self._options_target(options)
        data = await trio.to_thread.run_sync(self.spool.part_bytes, part)
        text = data[:OPTIONS_MAX].decode("utf-8", errors="replace")
        if item.kind == "bundle":
            item.parts = [p for p in item.parts if p.data != part.data]
            self.spool.remove_part(part.data)
            self.tree.remove(folder, node.name)
            await self._save(item)
        else:
            self._forget(item, f"renamed onto {OPTIONS_NAME}: an options edit, not sent")
        await self._set_options(target, target.channel, text)
        options.size = len(text.encode())

    def _replace_target(self, folder: Folder, name: str, keep: Node | None = None) -> None:
        """rename(2) replaces its target: an item of that name is cancelled or cleared."""
        target = self.tree.child(folder, name)
        if target is None or target is keep:
            return
        if isinstance(target, Folder):
            raise Refused(errno.EISDIR, f"{name!r} is a folder")
        writer = self._writer_of(target) if isinstance(target, File) else None
        if writer is not None:
            if writer.dirty or writer.item.kind != "file":
                raise Refused(errno.EBUSY, f"{name!r} is being written")
            self._replace_open(folder, name, writer)
            return
        found = self._item_of_file(target)
        if found is None:
            raise Refused(errno.EACCES, f"{name!r} cannot be replaced")
        item, _ = found
        if item.state == "sending":
            raise Refused(errno.EBUSY, f"{name!r} is being sent right now")
        if item.kind == "bundle":
            item.parts = [p for p in item.parts if p.data != found[1].data]
            self.spool.remove_part(found[1].data)
            self.tree.remove(folder, name)
            self.spool.save(item)
            return
        self._forget(item, "replaced by a renamed file" + (
            ", nothing was sent" if item.state in ("held", "queued", "settling", "empty") else ""))

    def _replace_open(self, folder: Folder, name: str, writer: _Writer) -> None:
        """A rename over a file that is open for writing but not written: GIO's replace
        opens the target (no O_TRUNC), writes `.goutputstream-XXXXXX` and renames it over
        the target before it closes it. The target's item is replaced; the descriptor
        still open on it writes into nothing."""
        writer.cancelled = True
        self.spool.remove_part(writer.part.data)
        self.items.pop(writer.item.id, None)
        self._item_nodes.pop(writer.item.id, None)
        old = writer.displaced or writer.item
        writer.displaced = None
        if old is writer.item:
            old.state = writer.was
        self.tree.remove(folder, name)
        self.spool.delete(old)
        self.items.pop(old.id, None)
        self._item_nodes.pop(old.id, None)
        log.info("outbox: %s to %s replaced by a renamed file%s", "/".join(old.path), old.recipient,
                 ", nothing was sent" if old.state in ("held", "queued", "settling", "empty") else "")

    async def _rename_folder(self, folder: Folder, node: Folder, new_folder: Folder, new_name: str) -> None:
        if new_folder is not folder:
            raise Refused(errno.EXDEV, "folders are renamed in place")
        if self.tree.child(folder, new_name) is not None:
            raise Refused(errno.EEXIST, f"{new_name!r} exists")
        item = self._item_of_folder(node)
        rcp, below = self._recipient_of(node) or (None, [])
        if rcp is None or len(below) != 1:
            raise Refused(errno.EACCES, "recipient folders keep their number; make a new one instead")
        if item is None:  # a plain group folder
            if new_name.endswith(DRAFT_SUFFIX):
                raise Refused(errno.EINVAL, f"make a draft with mkdir NAME{DRAFT_SUFFIX}")
            self.tree.move(node, folder, new_name)
            rcp.groups = [new_name if g == below[0] else g for g in rcp.groups]
            for other in self._items_below(node):
                other.path = [new_name] + other.path[1:]
                await self._save(other)
            await trio.to_thread.run_sync(self._save_recipients)
            return
        sealing = item.state == "held" and not new_name.endswith(DRAFT_SUFFIX)
        unsealing = item.state == "queued" and new_name.endswith(DRAFT_SUFFIX)
        if item.state == "sending":
            raise Refused(errno.EBUSY, f"{node.name!r} is being sent right now")
        if sealing:
            if not item.parts:
                raise Refused(errno.EINVAL, f"{node.name!r} is empty: copy files into it first")
            if self._writers_into(item):
                raise Refused(errno.EBUSY, f"{node.name!r}: files are still being written into it")
            try:
                mime.check_sizes(item.channel, [p.size for p in item.parts])
            except mime.MediaRejected as exc:
                raise Refused(exc.errno, f"{node.name!r}: {exc.reason}; not sent") from None
            text = item.options.get("__text__")
            if text is not None:
                item.options = {"__text__": text, **parse_options(item.channel, text)}
            item.state = "queued"
        elif unsealing:
            item.state = "held"
        elif item.state == "failed" and not new_name.endswith(DRAFT_SUFFIX):
            self._requeue(item, "renamed")
        self.tree.move(node, folder, new_name)
        item.path = [new_name]
        item.history.append([time.time(), item.state, f"renamed to {new_name}"])
        await self._save(item)
        if sealing:
            log.info("outbox: %s sealed: %d file(s) queued as one %s to %s", new_name, len(item.parts),
                     item.channel, item.recipient)
            self.on_queued()

    # for the sender ---------------------------------------------------------------------------------
    def options_for(self, item: Item) -> dict[str, str]:
        """The options an item is sent with: its recipient folder's, then its draft's."""
        rcp = self.recipients.get((item.channel, item.recipient))
        merged = dict(rcp.options if rcp else {})
        text = item.options.get("__text__")
        if text is not None:
            try:
                merged.update(parse_options(item.channel, text))
            except ValueError:
                pass
        return merged

    def waiting_items(self) -> list[Item]:
        return [i for i in self.items.values() if i.state in ("queued", "sending")]

    def final(self, item: Item) -> bool:
        return item.state in FINAL_STATES
