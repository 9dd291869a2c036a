"""/faxes, /voicemail and /mms: filled from the message store.

The first listing of a folder pages through the message store (perPage=1000, explicit
dateFrom) and takes a message-sync token with one small FSync; later refreshes, once
the folder's TTL has passed, cost one ISync request that returns only what changed.
"""

from __future__ import annotations

import datetime as dt
import logging

from .. import names
from ..api.errors import ApiError
from ..tree import File, Folder
from .media import RemoteMediaOwner

log = logging.getLogger(__name__)

MESSAGE_TYPES = {"faxes": "Fax", "voicemail": "VoiceMail", "mms": "SMS"}
DOCUMENT_TYPES = ("RenderedDocument", "SourceDocument")


def parties(record: dict) -> tuple[str, str]:
    """(from, to) as readable text for xattrs."""
    frm = record.get("from") or {}
    to = record.get("to") or []
    if isinstance(to, dict):
        to = [to]
    fmt = lambda p: p.get("phoneNumber") or p.get("extensionNumber") or p.get("name") or ""  # noqa: E731
    return fmt(frm), ",".join(filter(None, (fmt(p) for p in to if isinstance(p, dict))))


def other_party(record: dict) -> str:
    """The phone number on the other side of the message or call."""
    if record.get("direction") == "Outbound":
        to = record.get("to") or []
        party = (to[0] if isinstance(to, list) and to else to) or {}
    else:
        party = record.get("from") or {}
    if not isinstance(party, dict):
        party = {}
    return names.party_label(party.get("phoneNumber") or party.get("extensionNumber"), party.get("name"))


class MessageFolderOwner(RemoteMediaOwner):
    """One message-store folder (its `message_type`: Fax, VoiceMail or SMS)."""

    def __init__(self, *args, since: dt.datetime, **kw) -> None:
        super().__init__(*args, **kw)
        self.message_type = MESSAGE_TYPES[self.folder.name]
        self.since = since
        self.sync_token: str | None = None

    async def load(self) -> None:
        if self.sync_token is not None:
            try:
                result = await self.client.sync_messages(message_type=self.message_type,
                                                         sync_token=self.sync_token)
            except ApiError as exc:
                if exc.code != "MSG-333":
                    raise
                log.info("message sync for %s needs a full listing again (MSG-333)", self.message_type)
                self.sync_token = None
            else:
                self.sync_token = result.sync_token
                self.apply(result.records, full=False)
                return
        records = await self.client.list_messages(message_type=self.message_type, date_from=self.since)
        self.apply(records, full=True)
        try:
            # One small FSync (recordCount=1) gives the token that makes later refreshes cheap.
            result = await self.client.sync_messages(message_type=self.message_type, date_from=self.since,
                                                     record_count=1)
            self.sync_token = result.sync_token
        except ApiError as exc:
            log.info("no sync token for %s (%s); later refreshes will re-list", self.message_type, exc)

    def apply(self, records: list[dict], *, full: bool) -> None:
        seen: set[str] = set()
        for record in records:
            mid = str(record.get("id", ""))
            if not mid:
                continue
            seen.add(mid)
            self.remove_entries(mid)
            if record.get("availability", "Alive") != "Alive" or "attachments" not in record:
                continue
            try:
                created = names.parse_time(record.get("creationTime")) or dt.datetime.now(dt.timezone.utc)
                self.entries[mid] = self._message_nodes(record, created)
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                log.warning("skipping malformed message record %s: %s", mid, exc)
        if full:
            for mid in list(self.entries):
                if mid not in seen:
                    self.remove_entries(mid)

    def _message_nodes(self, record: dict, created: dt.datetime) -> list[str]:
        folder = self.folder
        mid = str(record["id"])
        kind = record.get("type")
        stem = names.base_name(created, record.get("direction"), other_party(record), mid)
        frm, to = parties(record)
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
