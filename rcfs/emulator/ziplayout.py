"""Zip archives laid out up front and produced on demand, one byte range at a time.

A message-store report archive can hold gigabytes of attachments the emulator already
generates lazily (`media.py`). Building the zip in memory or on disk would defeat that,
so `ZipLayout` computes where everything goes from the member list alone:

    local header 0 | data 0 | local header 1 | data 1 | ... | central directory | EOCD

Members are *stored* (method 0, no compression), so every member's size in the archive
is its size, and the archive's exact size is known before a single byte is read. Each
header is built when a read touches it. The only thing that needs the member's bytes is
its CRC-32 (in both headers); it is computed once per member, streaming, and cached.
Call `crcs_for(start, end)` from a worker thread before serving a range so the event
loop never spends a large member's CRC pass (the emulator's archive route does this).

`ZipLayout` has the `MediaObject` shape (`content_type`, `size`, `extension`,
`read(offset, length)`), so the media routes' Range/206/416 code serves it unchanged.

Limits, on purpose: no Zip64 (an archive and every member stay below 4 GiB; the report
splits its attachments into archives of at most 1 GB), ASCII member names only.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import struct
import threading
import zlib
from typing import Callable, Protocol, Sequence

CRC_PIECE = 1 << 20  # bytes read at a time while computing a CRC
ZIP32_LIMIT = 0xFFFFFFFF

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes, then the name
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes, then the name
_EOCD = struct.Struct("<IHHHHIIH")  # 22 bytes
LOCAL_SIG, CENTRAL_SIG, EOCD_SIG = 0x04034B50, 0x02014B50, 0x06054B50
VERSION = 20  # 2.0: what a stored member with directory names needs
UNIX_HOST = 3 << 8  # "made by" high byte: Unix, so the external attributes mean file modes
FILE_MODE = 0o100644 << 16


class Readable(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class Member:
    """One stored file of the archive: its path inside the zip, bytes and time."""

    name: str
    content: Readable
    modified: dt.datetime

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("/") or not self.name.isascii():
            raise ValueError(f"zip member names must be relative ASCII paths: {self.name!r}")
        if self.content.size > ZIP32_LIMIT:
            raise ValueError(f"member {self.name} exceeds 4 GiB (no Zip64 here)")


def local_entry_size(name: str, size: int) -> int:
    """Bytes one member takes before the central directory: local header + data."""
    return _LOCAL.size + len(name) + size


def central_entry_size(name: str) -> int:
    """Bytes one member takes in the central directory."""
    return _CENTRAL.size + len(name)


def archive_size(entries: Sequence[tuple[str, int]]) -> int:
    """Exact size of a stored zip of (name, size) members."""
    return sum(local_entry_size(n, s) + central_entry_size(n) for n, s in entries) + _EOCD.size


def _dos_time(t: dt.datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS form (2-second resolution, 1980..2107), in UTC."""
    t = t.astimezone(dt.timezone.utc) if t.tzinfo else t
    year = min(max(t.year, 1980), 2107)
    return ((t.hour << 11) | (t.minute << 5) | (t.second // 2),
            ((year - 1980) << 9) | (t.month << 5) | t.day)


def crc_of(content: Readable) -> int:
    """CRC-32 of all of `content`, read in 1 MiB pieces (memory independent of size)."""
    crc, pos = 0, 0
    while pos < content.size:
        data = content.read(pos, min(CRC_PIECE, content.size - pos))
        if not data:
            raise ValueError(f"content ended at {pos} of {content.size} bytes")
        crc = zlib.crc32(data, crc)
        pos += len(data)
    return crc


@dataclasses.dataclass(frozen=True)
class _Piece:
    start: int
    length: int
    produce: Callable[[int, int], bytes]  # (offset within the piece, length) -> bytes
    members: tuple[int, ...]  # members whose CRC producing this piece needs


class ZipLayout:
    """A stored zip of `members`, exact size up front, any byte range on demand."""

    content_type = "application/zip"
    extension = ".zip"

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self._crc: dict[int, int] = {}
        self._crc_lock = threading.Lock()
        pieces: list[_Piece] = []
        self._offsets: list[int] = []  # local header offset per member
        pos = 0
        for i, m in enumerate(self.members):
            self._offsets.append(pos)
            head = _LOCAL.size + len(m.name)
            pieces.append(_Piece(pos, head, self._local_header(i), (i,)))
            pos += head
            if m.content.size:
                pieces.append(_Piece(pos, m.content.size, m.content.read, ()))
                pos += m.content.size
        self.central_offset = pos
        for i, m in enumerate(self.members):
            length = central_entry_size(m.name)
            pieces.append(_Piece(pos, length, self._central_entry(i), (i,)))
            pos += length
        self.central_size = pos - self.central_offset
        pieces.append(_Piece(pos, _EOCD.size, self._eocd, ()))
        pos += _EOCD.size
        self.size = pos
        if self.size > ZIP32_LIMIT or len(self.members) > 0xFFFF:
            raise ValueError("archive too large for a zip without Zip64")
        self._pieces = pieces
        self._starts = [p.start for p in pieces]

    # CRCs ------------------------------------------------------------------------
    def crc(self, index: int) -> int:
        """The CRC-32 of member `index` (computed on first use, then cached)."""
        with self._crc_lock:
            value = self._crc.get(index)
        if value is None:
            value = crc_of(self.members[index].content)
            with self._crc_lock:
                self._crc[index] = value
        return value

    def crcs_for(self, start: int, end: int) -> int:
        """Compute (and cache) every CRC that bytes [start, end) need; returns how many
        were computed now. Run it in a worker thread before serving a range."""
        computed = 0
        for piece in self._pieces_in(start, end):
            for i in piece.members:
                if i not in self._crc:
                    self.crc(i)
                    computed += 1
        return computed

    # bytes -----------------------------------------------------------------------
    def _pieces_in(self, start: int, end: int) -> list[_Piece]:
        if start >= end:
            return []
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        out = []
        for piece in self._pieces[first:]:
            if piece.start >= end:
                break
            if piece.start + piece.length > start:
                out.append(piece)
        return out

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the archive, clipped to its size."""
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        end = min(self.size, offset + length)
        parts: list[bytes] = []
        for piece in self._pieces_in(offset, end):
            lo = max(offset, piece.start) - piece.start
            hi = min(end, piece.start + piece.length) - piece.start
            data = piece.produce(lo, hi - lo)
            if len(data) != hi - lo:
                raise ValueError(f"member content is shorter than its size at {piece.start + lo}")
            parts.append(data)
        return b"".join(parts)

    def _local_header(self, i: int) -> Callable[[int, int], bytes]:
        def produce(lo: int, n: int) -> bytes:
            m = self.members[i]
            mtime, mdate = _dos_time(m.modified)
            size = m.content.size
            head = _LOCAL.pack(LOCAL_SIG, VERSION, 0, 0, mtime, mdate, self.crc(i), size, size,
                               len(m.name), 0) + m.name.encode("ascii")
            return head[lo:lo + n]
        return produce

    def _central_entry(self, i: int) -> Callable[[int, int], bytes]:
        def produce(lo: int, n: int) -> bytes:
            m = self.members[i]
            mtime, mdate = _dos_time(m.modified)
            size = m.content.size
            entry = _CENTRAL.pack(CENTRAL_SIG, UNIX_HOST | VERSION, VERSION, 0, 0, mtime, mdate,
                                  self.crc(i), size, size, len(m.name), 0, 0, 0, 0, FILE_MODE,
                                  self._offsets[i]) + m.name.encode("ascii")
            return entry[lo:lo + n]
        return produce

    def _eocd(self, lo: int, n: int) -> bytes:
        count = len(self.members)
        return _EOCD.pack(EOCD_SIG, 0, 0, count, count, self.central_size, self.central_offset,
                          0)[lo:lo + n]

    def __repr__(self) -> str:
        return f"ZipLayout({len(self.members)} members, {self.size} bytes)"


class BytesContent:
    """In-memory member content (the report's metadata JSON)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]
