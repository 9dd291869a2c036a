"""The emulator's in-memory account: messages, call log, recordings, greetings.

This module is pure data: no HTTP, no rendering. The routes in `platform.py`,
`media_routes.py` and `sending.py` read and change it; `seed.py` fills it.

Every change to a message bumps its `last_modified` and is recorded in
`Store.changes`, which is what message-sync ISync replays.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
from typing import Callable, Iterable

from .media import MediaObject

UTC = dt.timezone.utc

# In `odd_json` overrides: drop this key from the rendered JSON (a "missing field").
DROP = object()


def conversation_id(numbers: list[str]) -> int:
    """The int64 conversation id of a set of phone numbers (the user's own included).

    Production gives every message between the same numbers the same `conversationId`,
    inbound and outbound alike, and a user's two numbers texting one person are two
    conversations; seeded, injected and sent texts all take their id from here. Real ids
    exceed 2^53 (CONTRACT §1), so these do too."""
    digest = hashlib.sha256("|".join(sorted(set(numbers))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1) | 2**62


def iso(t: dt.datetime) -> str:
    """RingCentral's timestamp form: ISO-8601 UTC with milliseconds and `Z`."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclasses.dataclass
class Attachment:
    """One attachment of a message (`MessageAttachmentInfo`).

    `media` produces the bytes; `expose_size` / `file_name` decide whether the
    JSON carries `size` / `fileName`, because the real API sometimes omits them.
    """

    id: int
    type: str  # AudioRecording, AudioTranscription, Text, SourceDocument, RenderedDocument, MmsAttachment
    media: MediaObject
    expose_size: bool = True
    file_name: str | None = None
    vm_duration: int | None = None  # voicemail audio only
    text: str | None = None  # Text attachments: the body (inline, no content request needed)
    # Keys that replace (or, with DROP, remove) fields of the rendered JSON: the odd
    # records production sometimes sends (EmulatorConfig.odd_records, seed.py).
    odd_json: dict | None = None


@dataclasses.dataclass
class Party:
    phone_number: str | None = None
    name: str | None = None
    extension_number: str | None = None
    # Outbound recipients once their send settled (None: the message's own status).
    message_status: str | None = None
    fax_error_code: str | None = None


@dataclasses.dataclass
class Message:
    id: int
    type: str  # Fax, SMS, VoiceMail, Pager
    direction: str  # Inbound, Outbound
    creation_time: dt.datetime
    from_: Party
    to: list[Party]
    attachments: list[Attachment]
    read_status: str = "Unread"
    availability: str = "Alive"  # Alive, Deleted, Purged
    message_status: str = "Received"
    subject: str | None = None
    fax_page_count: int | None = None
    fax_resolution: str | None = None
    conversation_id: int | None = None
    last_modified: dt.datetime | None = None
    vm_transcription_status: str | None = None
    # Fax sending: failure code per recipient once the send has failed.
    fax_error_code: str | None = None
    cover_index: int | None = None
    cover_page_text: str | None = None
    odd_json: dict | None = None  # as Attachment.odd_json, for the message's own fields

    def __post_init__(self) -> None:
        if self.last_modified is None:
            self.last_modified = self.creation_time


@dataclasses.dataclass
class Recording:
    id: str
    media: MediaObject  # audio/mpeg or audio/wav
    duration: int  # seconds
    type: str = "Automatic"  # Automatic, OnDemand


@dataclasses.dataclass
class CallRecord:
    id: str
    session_id: str
    start_time: dt.datetime
    duration: int
    type: str  # Voice, Fax
    direction: str
    action: str
    result: str
    from_: Party
    to: Party
    recording: Recording | None = None
    message_id: int | None = None  # link to a voicemail/fax in the message store


@dataclasses.dataclass
class Greeting:
    id: str
    type: str
    media: MediaObject
    answering_rule_id: str | None = None


@dataclasses.dataclass
class Change:
    """One entry of the change log that ISync replays."""

    seq: int
    at: dt.datetime
    message_id: int


class Store:
    """All account data of one emulated extension.

    `now` is injectable so tests can move time (e.g. fax Queued -> Sent).
    """

    def __init__(self, *, account_id: str = "400142200026", extension_id: str = "400142200026",
                 extension_number: str = "101", main_number: str = "+16505550100",
                 now: Callable[[], dt.datetime] | None = None) -> None:
        self.account_id = account_id
        self.extension_id = extension_id
        self.extension_number = extension_number
        self.main_number = main_number
        self.now = now or (lambda: dt.datetime.now(UTC))
        self.messages: dict[int, Message] = {}
        self.calls: dict[str, CallRecord] = {}
        self.recordings: dict[str, Recording] = {}
        self.greetings: dict[str, Greeting] = {}
        self.changes: list[Change] = []
        # The account's extensions (rcfs.emulator.company.Company) when this is the
        # signed-in user's store of a seeded company; None: a one-extension account.
        self.company = None
        self._ids = itertools.count(7_000_000_001)
        self._seq = itertools.count(1)

    # ids -----------------------------------------------------------------
    def new_id(self) -> int:
        """A fresh int64 id, unique across messages and attachments."""
        return next(self._ids)

    def bump_ids_past(self, value: int) -> None:
        """Make sure new ids never collide with seeded ones."""
        current = next(self._ids)
        self._ids = itertools.count(max(current, value + 1))

    # messages ------------------------------------------------------------
    def add_message(self, msg: Message) -> Message:
        self.messages[msg.id] = msg
        self._record_change(msg)
        return msg

    def touch(self, msg: Message) -> None:
        """Mark a message changed (read status, availability, send status)."""
        msg.last_modified = self.now()
        self._record_change(msg)

    def _record_change(self, msg: Message) -> None:
        self.changes.append(Change(next(self._seq), msg.last_modified or self.now(), msg.id))

    def query_messages(self, *, types: Iterable[str] = (), date_from: dt.datetime | None = None,
                       date_to: dt.datetime | None = None, directions: Iterable[str] = (),
                       availability: Iterable[str] = ("Alive",), read_status: Iterable[str] = (),
                       ) -> list[Message]:
        """Matching messages, newest first (the order the real API appears to use)."""
        types, directions = set(types), set(directions)
        availability, read_status = set(availability), set(read_status)
        out = [
            m for m in self.messages.values()
            if (not types or m.type in types)
            and (not directions or m.direction in directions)
            and (not availability or m.availability in availability)
            and (not read_status or m.read_status in read_status)
            and (date_from is None or m.creation_time >= date_from)
            and (date_to is None or m.creation_time <= date_to)
        ]
        out.sort(key=lambda m: (m.creation_time, m.id), reverse=True)
        return out

    def changed_since(self, seq: int) -> list[Message]:
        """Messages changed after change number `seq`, each once, in change order."""
        seen: dict[int, Message] = {}
        for change in self.changes:
            if change.seq > seq and change.message_id in self.messages:
                seen.pop(change.message_id, None)
                seen[change.message_id] = self.messages[change.message_id]
        return list(seen.values())

    @property
    def last_change_seq(self) -> int:
        return self.changes[-1].seq if self.changes else 0

    # call log ------------------------------------------------------------
    def add_call(self, call: CallRecord) -> CallRecord:
        self.calls[call.id] = call
        if call.recording is not None:
            self.recordings[call.recording.id] = call.recording
        return call

    def query_calls(self, *, date_from: dt.datetime | None = None, date_to: dt.datetime | None = None,
                    with_recording: bool = False, recording_type: str | None = None,
                    types: Iterable[str] = (), directions: Iterable[str] = ()) -> list[CallRecord]:
        """Matching call records, newest first."""
        types, directions = set(types), set(directions)
        out = []
        for c in self.calls.values():
            if date_from is not None and c.start_time < date_from:
                continue
            if date_to is not None and c.start_time > date_to:
                continue
            if types and c.type not in types:
                continue
            if directions and c.direction not in directions:
                continue
            if recording_type is not None:
                if c.recording is None or (recording_type != "All" and c.recording.type != recording_type):
                    continue
            elif with_recording and c.recording is None:
                continue
            out.append(c)
        out.sort(key=lambda c: (c.start_time, c.id), reverse=True)
        return out
