"""/faxes, /voicemail and /mms: filled from the message store.

The first listing of a folder pages through the message store (perPage=1000, explicit
dateFrom) and takes a message-sync token with one small FSync; later refreshes, once
the folder's TTL has passed, cost one ISync request that returns only what changed.

Records are taken as they come, odd ones included: a record without a usable id, with
attachments that are not a list, or that collides with another is skipped with a log
line; an attachment without an id is skipped; a size that is not an int in [0, 2**63)
counts as unknown (learned on first read); a creationTime that cannot be read is "now"
and one beyond what st_mtime can hold is clamped (`names.clamp_timestamp`). Whatever
happens, one record costs at most its own entries, never the listing of the folder.
"""

from __future__ import annotations

import datetime as dt
import logging

from .. import names
from ..api.errors import ApiError, PermissionDenied
from ..tree import File, Folder
from .media import RemoteMediaOwner

log = logging.getLogger(__name__)

MESSAGE_TYPES = {"faxes": "Fax", "voicemail": "VoiceMail", "mms": "SMS"}
# Push (rcfs.push): message-store changes of the user's mailbox, every type.
MAILBOX_FILTER = "/restapi/v1.0/account/~/extension/~/message-store"


def mailbox_filter(extension_id: str) -> str:
    """The message-store filter of `extension_id`'s mailbox (`~`: the user's own)."""
    return MAILBOX_FILTER if extension_id == "~" else f"/restapi/v1.0/account/~/extension/{extension_id}/message-store"
DOCUMENT_TYPES = ("RenderedDocument", "SourceDocument")


def parties(record: dict) -> tuple[str, str]:
    """(from, to) as readable text for xattrs."""
    frm = record.get("from")
    to = record.get("to") or []
    if isinstance(to, dict):
        to = [to]
    if not isinstance(to, list):
        to = []

    def fmt(p: object) -> str:
        if not isinstance(p, dict):
            return ""
        return str(p.get("phoneNumber") or p.get("extensionNumber") or p.get("name") or "")

    return fmt(frm), ",".join(filter(None, (fmt(p) for p in to)))


class MessageFolderOwner(RemoteMediaOwner):
    """One message-store folder (its `message_type`: Fax, VoiceMail or SMS)."""

    stable_file_attrs = True  # immutable media (FolderOwner.stable_file_attrs)

    def __init__(self, *args, since: dt.datetime, message_type: str | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.message_type = message_type or MESSAGE_TYPES[self.folder.name]
        self.since = since
        self.sync_token: str | None = None
        # Another extension's folder (company mode) asks for its mailbox's events only
        # once it is first listed: opening /company/users/<ext> (or `find` walking them
        # all) costs no filter, and the subscription's room goes to folders in use.
        self.looked = self.extension_id == "~"

    def push_filters(self) -> tuple[str, ...]:
        # One filter for every message folder of a mailbox: a change of any type names its type.
        return (mailbox_filter(self.extension_id),) if self.looked else ()

    def wants(self, notice) -> bool:
        return self.message_type in notice.message_types and notice.for_extension(self.extension_id)

    async def load(self) -> None:
        if not self.looked:
            self.looked = True
            self.push_changed()
        if self.sync_token is not None:
            try:
                result = await self.client.sync_messages(message_type=self.message_type,
                                                         sync_token=self.sync_token,
                                                         extension_id=self.extension_id)
            except ApiError as exc:
                if exc.code != "MSG-333":
                    raise
                log.info("message sync for %s needs a full listing again (MSG-333)", self.message_type)
                self.sync_token = None
            else:
                self.sync_token = result.sync_token
                self.apply(result.records, full=False)
                return
        # The token first, then the listing: a message that arrives between the two is
        # then both in the listing and replayed by the next ISync (applying it twice is
        # harmless). The other way round it would be in neither until a full re-list.
        # One small FSync (recordCount=1) gives the token that makes later refreshes cheap.
        token: str | None = None
        try:
            result = await self.client.sync_messages(message_type=self.message_type, date_from=self.since,
                                                     record_count=1, extension_id=self.extension_id)
            token = result.sync_token
        except PermissionDenied:
            raise  # the listing would be refused too (another user's mailbox): ask once, not twice
        except ApiError as exc:
            log.info("no sync token for %s (%s); later refreshes will re-list", self.message_type, exc)
        records = await self.client.list_messages(message_type=self.message_type, date_from=self.since,
                                                  extension_id=self.extension_id)
        self.apply(records, full=True)
        # Kept only once the listing is in: a load cut short between the two (an error,
        # the mount ending) must not leave a token for a listing never made.
        self.sync_token = token

    def apply(self, records: list, *, full: bool) -> None:
        """Bring the folder in step with `records`; a record that cannot be shown costs
        only its own entries (logged), never the listing."""
        seen: set[str] = set()
        skipped = 0
        for record in records:
            if not isinstance(record, dict):
                skipped += 1
                continue
            mid = record.get("id")
            if isinstance(mid, bool) or not isinstance(mid, (int, str)) or str(mid) == "":
                skipped += 1
                continue
            mid = str(mid)
            seen.add(mid)
            self.remove_entries(mid)
            if record.get("availability", "Alive") != "Alive" or "attachments" not in record:
                continue
            made: list[str] = []
            try:
                created = names.parse_time(record.get("creationTime"))
                if created is None:
                    log.warning("message %s: unusable creationTime %.40r; dated now",
                                mid, record.get("creationTime"))
                    created = dt.datetime.now(dt.timezone.utc)
                self._message_nodes(record, created, made)
            except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
                log.warning("skipping malformed message record %s: %s", mid, exc)
                for name in made:  # what was added before the failure must not linger
                    self.tree.remove(self.folder, name)
                continue
            self.entries[mid] = made
        if skipped:
            log.warning("skipped %d %s record(s) without a usable id", skipped, self.message_type)
        if full:
            for mid in list(self.entries):
                if mid not in seen:
                    self.remove_entries(mid)

    def _message_nodes(self, record: dict, created: dt.datetime, made: list[str]) -> None:
        """Add the entries of one message to the folder, their names to `made` as they go."""
        folder = self.folder
        mid = str(record["id"])
        kind = record.get("type")
        stem = names.base_name(created, record.get("direction"), names.other_party(record), mid)
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
        mtime = names.clamp_timestamp(created)
        raw_attachments = record.get("attachments") or []
        if not isinstance(raw_attachments, list):
            raise TypeError(f"attachments is a {type(raw_attachments).__name__}, not a list")
        attachments = []
        for att in raw_attachments:
            if not isinstance(att, dict) or not isinstance(att.get("uri"), str) or not att["uri"]:
                continue
            if isinstance(att.get("id"), bool) or not isinstance(att.get("id"), (int, str)) or att["id"] == "":
                # The id is half of the key (inode, learned size): two parts without one
                # would share a file. Skip the part, keep the rest of the message.
                log.warning("message %s: skipping an attachment without an id", mid)
                continue
            if not isinstance(att.get("contentType"), (str, type(None))):
                att = {**att, "contentType": None}
            attachments.append(att)
        taken: set[str] = set()

        def unique(name: str) -> str:
            """`name`, or `stem_2.ext`, `stem_3.ext`, ... when this message has it already."""
            if name not in taken:
                return name
            stem, dot, ext = name.rpartition(".")
            if not dot:
                stem, ext = name, ""
            n = 2
            while f"{stem}_{n}{dot}{ext}" in taken:
                n += 1
            return f"{stem}_{n}{dot}{ext}"

        def add_file(parent: Folder, name: str, att: dict, extra: dict[str, str]) -> None:
            key = f"{self.key_prefix}msg:{mid}:{att['id']}"
            size = names.valid_size(att.get("size"))
            if size is None:
                if att.get("size") is not None:
                    log.warning("message %s: unusable attachment size %.40r; size unknown until read",
                                mid, att.get("size"))
                size = names.valid_size(self.state.sizes.get(key))
            if parent is folder:
                name = unique(name)
            node = File(key=key, name=name, mtime=mtime, url=att["uri"], size=size,
                        content_type=att.get("contentType"))
            node.xattrs = {**common, **extra,
                           "user.rc.attachment_id": str(att.get("id", "")),
                           "user.rc.content_type": str(att.get("contentType", ""))}
            added = self.tree.add(parent, node)
            if isinstance(added, File) and added is not node:
                added.xattrs = node.xattrs  # re-listed: refresh metadata in place
            if parent is folder:
                taken.add(name)
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
                return  # plain SMS: not part of /mms
            sub = Folder(key=f"{self.key_prefix}mms:{mid}", name=stem, mtime=mtime)
            sub.xattrs = dict(common)
            added = self.tree.add(folder, sub)
            if not isinstance(added, Folder):
                raise ValueError(f"name collision in {folder.name!r}: {stem!r}")
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
