"""The RingCentral API client: the only code in rcfs that knows URLs, headers,
tokens and rate-limit groups.

INTERFACE CONTRACT (the FUSE side codes against exactly this; keep it stable):

    creds = Credentials(server_url=..., client_id=..., client_secret=..., jwt=...)
    async with RingCentralClient(creds, token_store=TokenStore(path), transport=None) as rc:
        msgs = await rc.list_messages(message_type="Fax", date_from=since)       # all pages
        sync = await rc.sync_messages(message_type="Fax", date_from=since)       # FSync -> SyncResult
        sync = await rc.sync_messages(message_type="Fax", sync_token=sync.sync_token)  # ISync
        calls = await rc.list_call_log(date_from=since)                           # recorded calls only
        chunk = await rc.fetch(url, start=0, end=1048575, priority=Priority.FOREGROUND)
        async with rc.stream(url, start=0, priority=Priority.READAHEAD) as s:
            s.total ; async for piece in s.aiter_bytes(): ...

Every method raises only `rcfs.api.errors.ApiError` subclasses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import AsyncIterator

import httpx


class Priority(enum.IntEnum):
    """Lower value goes first when a rate-limit group is short of budget."""

    FOREGROUND = 0  # a reader is blocked on this (read(), open(), readdir())
    READAHEAD = 1  # speculative: yields when the group's budget runs low
    BACKGROUND = 2  # refreshes, probes


@dataclasses.dataclass(frozen=True)
class Credentials:
    server_url: str  # e.g. https://platform.ringcentral.com (no trailing slash needed)
    client_id: str
    client_secret: str
    jwt: str

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(server_url={self.server_url!r}, client_id={self.client_id!r}, ...)"


@dataclasses.dataclass
class SyncResult:
    records: list[dict]  # full records; deleted ones may be just {id, availability}
    sync_token: str


@dataclasses.dataclass
class Chunk:
    """What one ranged GET returned.

    `start` is the offset of `data[0]` in the file (0 when the server ignored Range
    and sent the whole body with 200). `total` is the file size when the server said
    (Content-Range total, or Content-Length of a 200), else None. A server may send
    fewer bytes than asked (206 short): callers continue from `start + len(data)`.
    """

    data: bytes
    start: int
    total: int | None
    content_type: str | None


class Stream:
    """An open-ended streaming GET (`Range: bytes=N-`). Use via `RingCentralClient.stream`.

    `start`/`total`/`content_type` are known once the context manager is entered
    (headers received). `aiter_bytes()` yields body pieces as they arrive; it ends at the
    end of the body, which may be before the end of the file (byte cap): the caller
    opens a new stream from where it stopped. A dropped connection raises NetworkError.
    """

    start: int
    total: int | None
    content_type: str | None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        raise NotImplementedError
