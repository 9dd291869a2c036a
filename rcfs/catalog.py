"""Fills the tree's folders from message-store and call-log queries.

The first listing of a folder pages through the message store (perPage=1000, explicit
dateFrom) and takes a message-sync token with one small FSync; later refreshes, once
the folder's TTL has passed, cost one ISync request that returns only what changed.
Recordings come from the call log (Heavy group), re-listed after a longer TTL.

Recording content types are not in the call log; they cost a Heavy metadata request
each. Until one is known (from that request, or from the Content-Type of a download)
a recording is named `.mp3`, the usual type; once learned it is persisted, so the name
is stable across remounts from then on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Callable

import trio

from . import names
from .api.client import Priority
from .api.errors import ApiError, RateLimited
from .state import StateStore
from .tree import File, Folder, Node, Tree

log = logging.getLogger(__name__)

MESSAGE_FOLDERS = {"faxes": "Fax", "voicemail": "VoiceMail", "mms": "SMS"}
TOP_FOLDERS = ("faxes", "voicemail", "recordings", "mms", "outbox", "greetings")
DOCUMENT_TYPES = ("RenderedDocument", "SourceDocument")


@dataclasses.dataclass
class FolderState:
    """What we know about one top-level folder's remote listing."""

    folder: Folder
    loaded_at: float | None = None  # trio clock of the last successful refresh
    sync_token: str | None = None
    # message/call id -> names of the entries it produced in the folder
    entries: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)


def _parties(record: dict) -> tuple[str, str]:
    """(from, to) as readable text for xattrs."""
    frm = record.get("from") or {}
    to = record.get("to") or []
    if isinstance(to, dict):
        to = [to]
    fmt = lambda p: p.get("phoneNumber") or p.get("extensionNumber") or p.get("name") or ""  # noqa: E731
    return fmt(frm), ",".join(filter(None, (fmt(p) for p in to if isinstance(p, dict))))


def _other_party(record: dict) -> str:
    """The phone number on the other side of the message or call."""
    if record.get("direction") == "Outbound":
        to = record.get("to") or []
        party = (to[0] if isinstance(to, list) and to else to) or {}
    else:
        party = record.get("from") or {}
    if not isinstance(party, dict):
        party = {}
    return names.party_label(party.get("phoneNumber") or party.get("extensionNumber"), party.get("name"))


class Catalog:
    """Owns the top-level folders and keeps them in step with the account."""

    def __init__(self, client, tree: Tree, state: StateStore, *, since: dt.datetime,
                 message_ttl: float = 30.0, recording_ttl: float = 300.0,
                 on_change: Callable[[Folder], None] | None = None) -> None:
        self.client = client
        self.tree = tree
        self.state = state
        self.since = since
        self.message_ttl = message_ttl
        self.recording_ttl = recording_ttl
        self.on_change = on_change or (lambda folder: None)
        self.folders: dict[str, FolderState] = {}
        for name in TOP_FOLDERS:
            folder = tree.mkdir(tree.root, name, key=f"dir:{name}",
                                writable=name in ("outbox", "greetings"))
            self.folders[name] = FolderState(folder)
        self._by_inode = {fs.folder.inode: fs for fs in self.folders.values()}

    # public -------------------------------------------------------------------------
    def top_folder_state(self, folder: Folder) -> FolderState | None:
        return self._by_inode.get(folder.inode)

    def is_fresh(self, name: str) -> bool:
        fs = self.folders[name]
        ttl = self.recording_ttl if name == "recordings" else self.message_ttl
        return fs.loaded_at is not None and trio.current_time() - fs.loaded_at < ttl

    async def ensure_loaded(self, folder: Folder) -> None:
        """Make sure a top-level folder's listing is no older than its TTL.

        A failed refresh of a folder that was loaded before keeps the old listing (with
        a warning) rather than failing the `ls`; a first load that fails raises.
        """
        fs = self.top_folder_state(folder)
        if fs is None or fs.folder.name in ("outbox", "greetings"):
            return
        name = fs.folder.name
        if self.is_fresh(name):
            return
        async with fs.lock:  # single flight: concurrent `ls` share one refresh
            if self.is_fresh(name):
                return
            try:
                if name == "recordings":
                    await self._load_recordings(fs)
                else:
                    await self._refresh_messages(fs, MESSAGE_FOLDERS[name])
            except ApiError as exc:
                if fs.loaded_at is None:
                    raise
                log.warning("refreshing /%s failed, showing the previous listing: %s", name, exc)
                fs.loaded_at = trio.current_time()  # do not hammer a failing API
                return
            fs.loaded_at = trio.current_time()
            self.state.maybe_flush()

    # messages --------------------------------------------------------------------
    async def _refresh_messages(self, fs: FolderState, message_type: str) -> None:
        if fs.sync_token is not None:
            try:
                result = await self.client.sync_messages(message_type=message_type,
                                                         sync_token=fs.sync_token)
            except ApiError as exc:
                if exc.code != "MSG-333":
                    raise
                log.info("message sync for %s needs a full listing again (MSG-333)", message_type)
                fs.sync_token = None
            else:
                fs.sync_token = result.sync_token
                self._apply_messages(fs, result.records, full=False)
                return
        records = await self.client.list_messages(message_type=message_type, date_from=self.since)
        self._apply_messages(fs, records, full=True)
        try:
            # One small FSync (recordCount=1) gives the token that makes later refreshes cheap.
            result = await self.client.sync_messages(message_type=message_type, date_from=self.since,
                                                     record_count=1)
            fs.sync_token = result.sync_token
        except ApiError as exc:
            log.info("no sync token for %s (%s); later refreshes will re-list", message_type, exc)

    def _apply_messages(self, fs: FolderState, records: list[dict], *, full: bool) -> None:
        seen: set[str] = set()
        for record in records:
            mid = str(record.get("id", ""))
            if not mid:
                continue
            seen.add(mid)
            self._remove_entries(fs, mid)
            if record.get("availability", "Alive") != "Alive" or "attachments" not in record:
                continue
            try:
                created = names.parse_time(record.get("creationTime")) or dt.datetime.now(dt.timezone.utc)
                fs.entries[mid] = self._message_nodes(fs.folder, record, created)
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                log.warning("skipping malformed message record %s: %s", mid, exc)
        if full:
            for mid in list(fs.entries):
                if mid not in seen:
                    self._remove_entries(fs, mid)
        self.on_change(fs.folder)

    def _remove_entries(self, fs: FolderState, object_id: str) -> None:
        for name in fs.entries.pop(object_id, []):
            self.tree.remove(fs.folder, name)

    def _message_nodes(self, folder: Folder, record: dict, created: dt.datetime) -> list[str]:
        mid = str(record["id"])
        kind = record.get("type")
        stem = names.base_name(created, record.get("direction"), _other_party(record), mid)
        frm, to = _parties(record)
        common = {
            "user.rc.id": mid,
            "user.rc.type": str(kind or ""),
            "user.rc.from": frm,
            "user.rc.to": to,
            "user.rc.direction": str(record.get("direction", "")),
            "user.rc.read_status": str(record.get("readStatus", "")),
            "user.rc.message_status": str(record.get("messageStatus", "")),
            "user.rc.created": str(record.get("creationTime", "")),
        }
        if record.get("faxPageCount") is not None:
            common["user.rc.fax_pages"] = str(record["faxPageCount"])
        if record.get("faxResolution"):
            common["user.rc.fax_resolution"] = str(record["faxResolution"])
        if record.get("subject") and kind != "Fax":
            common["user.rc.subject"] = str(record["subject"])[:1000]
        mtime = created.timestamp()
        attachments = [a for a in record.get("attachments") or [] if isinstance(a, dict) and a.get("uri")]
        made: list[str] = []

        def add_file(parent: Folder, name: str, att: dict, extra: dict[str, str]) -> None:
            key = f"msg:{mid}:{att.get('id')}"
            size = att.get("size")
            if not isinstance(size, int) or size < 0:
                size = self.state.sizes.get(key)
            node = File(key=key, name=name, mtime=mtime, url=str(att["uri"]), size=size,
                        content_type=att.get("contentType"))
            node.xattrs = {**common, **extra,
                           "user.rc.attachment_id": str(att.get("id", "")),
                           "user.rc.content_type": str(att.get("contentType", ""))}
            added = self.tree.add(parent, node)
            if isinstance(added, File) and added is not node:
                added.xattrs = node.xattrs  # re-listed: refresh metadata in place
            if parent is folder:
                made.append(name)

        if kind == "Fax":
            docs = [a for a in attachments if a.get("type") in DOCUMENT_TYPES] or attachments
            # Prefer the rendered document: it is what was actually faxed.
            docs.sort(key=lambda a: a.get("type") != "RenderedDocument")
            for i, att in enumerate(docs):
                suffix = "" if i == 0 else f"_{i + 1}"
                add_file(folder, names.with_extension(stem + suffix, att.get("contentType")), att, {})
        elif kind == "VoiceMail":
            for att in attachments:
                if att.get("type") == "AudioRecording":
                    extra = {}
                    if att.get("vmDuration") is not None:
                        extra["user.rc.duration"] = str(att["vmDuration"])
                    add_file(folder, names.with_extension(stem, att.get("contentType")), att, extra)
                elif att.get("type") == "AudioTranscription":
                    extra = {"user.rc.transcription_status": str(record.get("vmTranscriptionStatus", ""))}
                    add_file(folder, stem + ".txt", att, extra)
        elif kind in ("SMS", "Pager"):
            media = [a for a in attachments if a.get("type") == "MmsAttachment"]
            if not media:
                return made  # plain SMS: not part of /mms
            sub = Folder(key=f"mms:{mid}", name=stem, mtime=mtime)
            sub.xattrs = dict(common)
            added = self.tree.add(folder, sub)
            assert isinstance(added, Folder)
            made.append(stem)
            used: set[str] = set()
            for i, att in enumerate(media, start=1):
                name = names.attachment_name(att.get("fileName"), i, att.get("contentType"))
                used.add(name)
                add_file(added, name, att, {})
            for att in attachments:
                if att.get("type") == "Text":
                    name = "text.txt" if "text.txt" not in used else "message-text.txt"
                    add_file(added, name, att, {})
                    break
        return made

    # recordings ----------------------------------------------------------------------
    async def _load_recordings(self, fs: FolderState) -> None:
        records = await self.client.list_call_log(date_from=self.since)
        seen: set[str] = set()
        for record in records:
            rec = record.get("recording")
            if not isinstance(rec, dict) or not rec.get("contentUri") or not rec.get("id"):
                continue
            rid = str(rec["id"])
            seen.add(rid)
            if rid in fs.entries:
                continue
            try:
                created = names.parse_time(record.get("startTime")) or dt.datetime.now(dt.timezone.utc)
                fs.entries[rid] = [self._recording_node(fs.folder, record, rec, created)]
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                log.warning("skipping malformed call record %s: %s", record.get("id"), exc)
        for rid in list(fs.entries):
            if rid not in seen:
                self._remove_entries(fs, rid)
        self.on_change(fs.folder)

    def _recording_node(self, folder: Folder, record: dict, rec: dict, created: dt.datetime) -> str:
        rid = str(rec["id"])
        key = f"rec:{rid}"
        content_type = self.state.content_types.get(key, "audio/mpeg")
        stem = names.base_name(created, record.get("direction"), _other_party(record), rid)
        name = names.with_extension(stem, content_type)
        frm, to = _parties(record)
        node = File(key=key, name=name, mtime=created.timestamp(), url=str(rec["contentUri"]),
                    size=self.state.sizes.get(key), content_type=content_type)
        node.xattrs = {
            "user.rc.id": rid,
            "user.rc.type": "Recording",
            "user.rc.call_id": str(record.get("id", "")),
            "user.rc.recording_type": str(rec.get("type", "")),
            "user.rc.from": frm,
            "user.rc.to": to,
            "user.rc.direction": str(record.get("direction", "")),
            "user.rc.result": str(record.get("result", "")),
            "user.rc.duration": str(record.get("duration", "")),
            "user.rc.created": str(record.get("startTime", "")),
            "user.rc.content_type": content_type,
        }
        self.tree.add(folder, node)
        return name

    def learn_recording_type(self, node: File, content_type: str) -> None:
        """A download or metadata call told us the real type: fix the name if needed."""
        base = content_type.split(";", 1)[0].strip().lower()
        self.state.learn_content_type(node.key, base)
        if names.extension_for(base) == names.extension_for(node.content_type):
            return
        fs = self.folders["recordings"]
        rid = node.key.split(":", 1)[1]
        stem = node.name.rsplit(".", 1)[0]
        self.tree.rename(fs.folder, node, names.with_extension(stem, base))
        node.content_type = base
        node.xattrs["user.rc.content_type"] = base
        fs.entries[rid] = [node.name]
        self.on_change(fs.folder)

    async def resolve_recording_types(self, limit: int = 1) -> None:
        """Ask for the content type of up to `limit` recordings not yet known.

        The caller decides when Heavy quota can be spared (see `rcfs.mount._background`).
        """
        fs = self.folders["recordings"]
        for node in list(fs.folder.children.values()):
            if limit <= 0:
                return
            if not isinstance(node, File) or node.key in self.state.content_types:
                continue
            limit -= 1
            try:
                meta = await self.client.get_recording(node.key.split(":", 1)[1], priority=Priority.BACKGROUND)
            except RateLimited:
                return
            except ApiError as exc:
                log.debug("recording metadata for %s failed: %s", node.key, exc)
                continue
            if meta.get("contentType"):
                self.learn_recording_type(node, str(meta["contentType"]))


def iter_files(node: Node):
    """All files below `node` (used by tests and statistics)."""
    if isinstance(node, Folder):
        for child in node.children.values():
            yield from iter_files(child)
    elif isinstance(node, File):
        yield node
