"""/recordings: call recordings, filled from the call log (Heavy group).

Recording content types are not in the call log; they cost a Heavy request each. Until
one is known (from the Content-Type of a download, or of the one-byte probe that
`rcfs.background` sends while the Heavy group is idle) a recording is named `.mp3`, the
usual type; once learned it is persisted, so the name is stable across remounts from
then on.
"""

from __future__ import annotations

import datetime as dt
import logging

import trio

from .. import names
from ..tree import File
from .media import RemoteMediaOwner
from .messages import parties

log = logging.getLogger(__name__)


# Push (rcfs.push): the user's calls, only once they end (a recording is complete then).
TELEPHONY_FILTER = "/restapi/v1.0/account/~/extension/~/telephony/sessions?statusCode=Disconnected"
# Seconds between asks of the call log for an ended call's recording: the call log may
# lag the end of the call (PUSH-AND-ADMIN §A7); bounded, then the next sync finds it.
CALL_LOG_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


class RecordingsOwner(RemoteMediaOwner):
    stable_file_attrs = True  # immutable media (FolderOwner.stable_file_attrs)

    def __init__(self, *args, since: dt.datetime, **kw) -> None:
        super().__init__(*args, **kw)
        self.since = since

    def key_for(self, rid: str) -> str:
        """A recording's node key (`key_prefix`: see RemoteMediaOwner)."""
        return f"{self.key_prefix}rec:{rid}"

    async def load(self) -> None:
        records = await self.client.list_call_log(date_from=self.since, extension_id=self.extension_id)
        seen = self._add_records(records)
        for rid in list(self.entries):
            if rid not in seen:
                self.remove_entries(rid)

    def _add_records(self, records: list) -> set[str]:
        """Add the recordings of `records` not shown yet; returns every recording id seen."""
        seen: set[str] = set()
        for record in records:
            if not isinstance(record, dict):
                log.warning("skipping a call-log record that is not an object")
                continue
            rec = record.get("recording")
            if not isinstance(rec, dict) or not rec.get("contentUri") or not rec.get("id"):
                continue
            rid = str(rec["id"])
            seen.add(rid)
            if rid in self.entries:
                continue
            try:
                created = names.parse_time(record.get("startTime")) or dt.datetime.now(dt.timezone.utc)
                self.entries[rid] = [self._recording_node(record, rec, created)]
            except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
                log.warning("skipping malformed call record %s: %s", record.get("id"), exc)
        return seen

    # push ------------------------------------------------------------------------------
    def push_filters(self) -> tuple[str, ...]:
        # The signed-in user's calls. Another extension's folder (company mode) has no
        # filter of its own: it keeps its TTL, and takes the account-level events that
        # /company/recordings subscribes to when they name its extension (below).
        return (TELEPHONY_FILTER,) if self.extension_id == "~" else ()

    def wants(self, notice) -> bool:
        if not (notice.kind == "telephony" and notice.status == "Disconnected" and notice.recording_ids
                and notice.telephony_session_id is not None):
            return False
        if self.extension_id == "~":
            # Only the user's own filter: the account-level one announces the same call again.
            return not notice.account_level and notice.for_extension("~")
        return notice.account_level and self.extension_id in notice.party_extension_ids

    async def pushed(self, notices: list) -> None:
        """A call with recordings ended: ask the call log for that session (one Heavy
        request; again, a few times, while the call log has not got it yet)."""
        if not self.listed:
            return  # the first look lists the folder whole
        for notice in notices:
            wanted = set(notice.recording_ids)
            if wanted <= set(self.entries):
                continue
            for wait in (*CALL_LOG_WAITS, None):
                records = await self.client.list_call_log(date_from=self.since, extension_id=self.extension_id,
                                                          telephony_session_id=notice.telephony_session_id)
                before = set(self.folder.children)
                self._add_records(records)
                self.announce(before)
                if wanted <= set(self.entries):
                    break
                if wait is None:
                    log.info("the call log has no recording for an ended call yet; the next "
                             "sync of /%s shows it", self.name)
                    self.invalidate()
                    break
                await trio.sleep(wait)

    def _recording_node(self, record: dict, rec: dict, created: dt.datetime) -> str:
        rid = str(rec["id"])
        key = self.key_for(rid)
        content_type = self.state.content_types.get(key, "audio/mpeg")
        stem = names.base_name(created, record.get("direction"), names.other_party(record), rid)
        name = names.with_extension(stem, content_type)
        frm, to = parties(record)
        node = File(key=key, name=name, mtime=names.clamp_timestamp(created), url=str(rec["contentUri"]),
                    size=names.valid_size(self.state.sizes.get(key)), content_type=content_type)
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
        self.tree.add(self.folder, node)
        return name

    def content_type_learned(self, node: File, content_type: str) -> None:
        """A download or metadata call told us the real type: fix the name if needed."""
        base = content_type.split(";", 1)[0].strip().lower()
        self.state.learn_content_type(node.key, base)
        if names.extension_for(base) == names.extension_for(node.content_type):
            return
        rid = node.xattrs.get("user.rc.id") or node.key.rsplit(":", 1)[1]
        stem = node.name.rsplit(".", 1)[0]
        self.tree.rename(self.folder, node, names.with_extension(stem, base))
        node.content_type = base
        node.xattrs["user.rc.content_type"] = base
        self.entries[rid] = [node.name]
