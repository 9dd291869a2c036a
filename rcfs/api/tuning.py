"""Throughput tuning of httpx's HTTP/1.1 stack (httpcore + h11) for large media bodies.

Imported by `rcfs.api.client` before any connection is made. Every change is guarded:
when the library internals they rely on are not there (another version), rcfs runs
with the libraries as they are, only slower.

Why: a streamed recording is hundreds of MB, and on the machines rcfs is measured on the
CPU spent per byte decides the read speed (scripts/bench). Stock httpcore reads the
socket 64 KiB at a time, and h11 copies every body byte three times (into its receive
buffer, then twice while cutting a piece out of it) before httpcore copies it once more
into `bytes`. And past its first piece, a media body need not climb through httpx,
httpcore and h11 at all (`RawBody`, used by rcfs.api.client's media streams).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SOCKET_READ_BYTES = 1 << 20


def _raise_socket_reads() -> bool:
    """httpcore reads 64 KiB per socket read; 1 MiB reads mean 16x fewer trips through
    h11 and trio per byte."""
    try:
        import httpcore._async.http11 as h11conn
    except ImportError:  # pragma: no cover - depends on the httpcore version
        return False
    if not isinstance(getattr(h11conn.AsyncHTTP11Connection, "READ_NUM_BYTES", None), int):
        return False  # pragma: no cover
    if h11conn.AsyncHTTP11Connection.READ_NUM_BYTES < SOCKET_READ_BYTES:
        h11conn.AsyncHTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES
    return True


def _cap_reads() -> bool:
    """Give httpcore's trio stream a `read_cap`: when set (an int), no socket read of that
    connection asks for more bytes. The media reader sets it to the distance to its next
    block boundary, so the body of a stream arrives as `bytes` objects that are each
    exactly one block: the block cache keeps them as they are, with no copy (see
    `rcfs.api.client._SocketBatching`). None (the default) leaves reads as they are."""
    try:
        from httpcore._backends.trio import TrioStream
    except ImportError:  # pragma: no cover - depends on the httpcore version
        return False
    read = getattr(TrioStream, "read", None)
    if read is None or getattr(read, "_rcfs_capped", False):
        return read is not None

    async def capped_read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # type: ignore[no-untyped-def]
        cap = self.read_cap
        if cap is not None and cap < max_bytes:
            max_bytes = cap
        return await read(self, max_bytes, timeout)

    capped_read._rcfs_capped = True  # type: ignore[attr-defined]
    TrioStream.read_cap = None  # type: ignore[attr-defined]
    TrioStream.read = capped_read  # type: ignore[method-assign]
    return True


def _pass_through_buffer_class() -> type | None:
    """A subclass of h11's ReceiveBuffer that hands a socket read on without copying it.

    A socket read that lands in an empty buffer is kept as the `bytes` object it is; when
    the body reader then asks for at least that many bytes (the normal case in the middle
    of a body), it gets that very object: no copy in h11, and httpcore's `bytes(data)` is
    free for an exact `bytes`. Every other use (headers, chunk sizes, partial pieces)
    first folds the kept read into the bytearray and runs h11's own code unchanged.
    """
    try:
        from h11 import _receivebuffer
    except ImportError:  # pragma: no cover
        return None
    base = getattr(_receivebuffer, "ReceiveBuffer", None)
    needed = ("_extract", "maybe_extract_at_most", "maybe_extract_next_line", "maybe_extract_lines",
              "is_next_line_obviously_invalid_request_line")
    if base is None or not all(hasattr(base, name) for name in needed):
        return None  # pragma: no cover
    probe = base()
    if not all(hasattr(probe, a) for a in ("_data", "_next_line_search", "_multiple_lines_search")):
        return None  # pragma: no cover

    class PassThroughReceiveBuffer(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._kept: bytes | None = None  # set only while `_data` is empty

        def _fold(self) -> None:
            if self._kept is not None:
                self._data += self._kept
                self._kept = None

        def __iadd__(self, byteslike):  # type: ignore[no-untyped-def]
            if self._kept is None and not self._data and type(byteslike) is bytes and byteslike:
                self._kept = byteslike
            else:
                self._fold()
                self._data += byteslike
            return self

        def __len__(self) -> int:
            return len(self._kept) if self._kept is not None else len(self._data)

        def __bool__(self) -> bool:
            return len(self) > 0

        def __bytes__(self) -> bytes:
            self._fold()
            return bytes(self._data)

        def maybe_extract_at_most(self, count):  # type: ignore[no-untyped-def]
            kept = self._kept
            if kept is not None and len(kept) <= count:
                self._kept = None
                self._next_line_search = 0
                self._multiple_lines_search = 0
                return kept
            self._fold()
            return super().maybe_extract_at_most(count)

        def _extract(self, count):  # type: ignore[no-untyped-def]
            self._fold()
            return super()._extract(count)

        def maybe_extract_next_line(self):  # type: ignore[no-untyped-def]
            self._fold()
            return super().maybe_extract_next_line()

        def maybe_extract_lines(self):  # type: ignore[no-untyped-def]
            self._fold()
            return super().maybe_extract_lines()

        def is_next_line_obviously_invalid_request_line(self) -> bool:
            self._fold()
            return super().is_next_line_obviously_invalid_request_line()

    return PassThroughReceiveBuffer


def _install_pass_through_buffer() -> bool:
    try:
        from h11 import _connection
    except ImportError:  # pragma: no cover
        return False
    cls = _pass_through_buffer_class()
    if cls is None or getattr(_connection, "ReceiveBuffer", None) is not cls.__mro__[1]:
        return False  # pragma: no cover - another h11 layout
    _connection.ReceiveBuffer = cls
    return True


class RawBody:
    """The rest of a Content-Length body, read straight from the connection's socket.

    Why: each piece of a streamed body otherwise climbs through about fifteen Python
    frames (httpx's, httpcore's and h11's generators and event objects) on its way to the
    reader; a socket read through this takes two. h11 stays in step: every byte read here
    is taken off its ContentLengthReader's count, so once the body is in, the caller goes
    back to httpx's iterator, h11 answers EndOfMessage and the connection returns to the
    pool as usual. Stopped half-way (cancelled, timed out, closed), h11 still expects the
    rest and httpcore closes the connection, as it does for any body not read to its end.
    A socket read that ends the connection early (b"") raises BodyCut: what h11 would
    report as "peer closed connection without sending complete message body".
    """

    __slots__ = ("_stream", "_reader")

    def __init__(self, stream: object, reader: object) -> None:
        self._stream = stream  # httpcore's network stream (its read is capped, see _cap_reads)
        self._reader = reader  # h11's ContentLengthReader of this answer

    @property
    def remaining(self) -> int:
        return self._reader._remaining  # type: ignore[attr-defined, no-any-return]

    async def read(self, max_bytes: int = SOCKET_READ_BYTES) -> bytes:
        data: bytes = await self._stream.read(min(max_bytes, self.remaining))  # type: ignore[attr-defined]
        if not data:
            raise BodyCut(f"peer closed connection without sending complete message body "
                          f"({self.remaining} bytes missing)")
        self._reader._remaining -= len(data)  # type: ignore[attr-defined]
        return data


class BodyCut(Exception):
    """The connection ended before the body did (RawBody.read)."""


def raw_body(response: object) -> RawBody | None:
    """A RawBody for the rest of `response`'s body (an httpx.Response being streamed), or
    None when that is not safe: another library layout, a body without Content-Length
    (chunked), bytes h11 holds but has not handed out, or nothing left to read."""
    try:
        import h11
        from h11._readers import ContentLengthReader

        core = response.stream._stream._httpcore_stream._stream  # type: ignore[attr-defined]
        conn = core._connection
        state = conn._h11_state
        reader = state._reader
        buffered = len(state._receive_buffer)
        stream = conn._network_stream
    except (AttributeError, ImportError):
        return None
    if (type(reader) is not ContentLengthReader or state.their_state is not h11.SEND_BODY or buffered
            or not isinstance(getattr(reader, "_remaining", None), int) or reader._remaining <= 0
            or not callable(getattr(stream, "read", None))):
        return None
    return RawBody(stream, reader)


def install() -> dict[str, bool]:
    """Apply the tuning once; returns which parts are active (for logs and tests)."""
    global _applied
    if _applied is None:
        _applied = {"socket_reads": _raise_socket_reads(), "pass_through_buffer": _install_pass_through_buffer(),
                    "read_cap": _cap_reads()}
        if not all(_applied.values()):
            log.info("HTTP tuning partly unavailable with these library versions: %s", _applied)
    return _applied


_applied: dict[str, bool] | None = None
