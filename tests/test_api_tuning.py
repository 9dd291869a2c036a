"""rcfs.api.tuning: the HTTP stack changes behave exactly like the originals, minus copies."""

from __future__ import annotations

import h11
from h11 import _connection, _receivebuffer
from hypothesis import given, settings
from hypothesis import strategies as st

import rcfs.api.client  # noqa: F401 - installs the tuning, as every rcfs process does
from rcfs.api import tuning

ORIGINAL = _receivebuffer.ReceiveBuffer
PATCHED = _connection.ReceiveBuffer


def test_both_changes_are_active_with_the_pinned_libraries():
    # If a library upgrade makes a change inapplicable, rcfs still works but slower:
    # this test is what notices.
    assert tuning.install() == {"socket_reads": True, "pass_through_buffer": True}
    assert PATCHED is not ORIGINAL and issubclass(PATCHED, ORIGINAL)
    import httpcore._async.http11 as h11conn

    assert h11conn.AsyncHTTP11Connection.READ_NUM_BYTES >= 1 << 20


_chunks = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"x", b"\r\n"))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _chunks),
        st.tuples(st.just("add_bytearray"), _chunks),
        st.tuples(st.just("at_most"), st.integers(0, 60)),
        st.tuples(st.just("at_most"), st.integers(0, 60)),  # twice: the path that matters most
        st.tuples(st.just("next_line"), st.none()),
        st.tuples(st.just("lines"), st.none()),
        st.tuples(st.just("invalid"), st.none()),
        st.tuples(st.just("len"), st.none()),
        st.tuples(st.just("bytes"), st.none()),
    ),
    min_size=2,
    max_size=40,
)


def _apply(buf, op, arg):
    if op == "add":
        buf += arg
        return None
    if op == "add_bytearray":
        buf += bytearray(arg)
        return None
    if op == "at_most":
        out = buf.maybe_extract_at_most(arg)
        return None if out is None else bytes(out)
    if op == "next_line":
        out = buf.maybe_extract_next_line()
        return None if out is None else bytes(out)
    if op == "lines":
        out = buf.maybe_extract_lines()
        return None if out is None else [bytes(x) for x in out]
    if op == "invalid":
        return buf.is_next_line_obviously_invalid_request_line()
    if op == "len":
        return (len(buf), bool(buf))
    return bytes(buf)


@settings(max_examples=400, deadline=None)
@given(ops=_ops)
def test_pass_through_buffer_answers_like_h11s_own(ops):
    plain, fast = ORIGINAL(), PATCHED()
    for op, arg in ops:
        try:
            want = ("ok", _apply(plain, op, arg))
        except Exception as exc:  # noqa: BLE001 - both must fail alike
            want = ("error", type(exc))
        try:
            got = ("ok", _apply(fast, op, arg))
        except Exception as exc:  # noqa: BLE001
            got = ("error", type(exc))
        assert got == want, (op, arg)
        assert _content(fast) == _content(plain)  # (bytes(buf) would fold the kept read)


def _content(buf) -> bytes:
    return bytes(buf._data) + (getattr(buf, "_kept", None) or b"")


def test_a_kept_socket_read_is_cut_like_any_other():
    for count in (0, 1, 3, 4, 5, 100):
        plain, fast = ORIGINAL(), PATCHED()
        plain += b"abcd"
        fast += b"abcd"
        a, b = plain.maybe_extract_at_most(count), fast.maybe_extract_at_most(count)
        assert (None if a is None else bytes(a)) == (None if b is None else bytes(b)), count
        assert bytes(plain) == bytes(fast) and len(plain) == len(fast)


def _client_reading(response_parts: list[bytes]) -> tuple[list[h11.Event], list[bytes]]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    events, bodies = [], []
    for part in response_parts:
        conn.receive_data(part)
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                break
            events.append(ev)
            if isinstance(ev, h11.Data):
                bodies.append(ev.data)
            if isinstance(ev, h11.EndOfMessage):
                return events, bodies
    return events, bodies


def test_a_body_read_arrives_as_the_very_object_the_socket_gave():
    body_piece = bytes(range(256)) * 4096  # 1 MiB, as one socket read
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (3 * len(body_piece))
    pieces = [head, body_piece, body_piece, body_piece]
    events, bodies = _client_reading(pieces)
    assert b"".join(bytes(b) for b in bodies) == body_piece * 3
    assert isinstance(events[-1], h11.EndOfMessage)
    # Each socket read that landed in an empty buffer came out without a copy.
    assert sum(b is body_piece for b in bodies) == 3


def test_headers_split_anywhere_and_chunked_bodies_still_parse():
    body = b"".join(bytes([i]) * (i * 7 + 1) for i in range(40))
    chunked = b"".join(b"%x\r\n" % len(body[i:i + 97]) + body[i:i + 97] + b"\r\n" for i in range(0, len(body), 97))
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n" + chunked + b"0\r\n\r\n"
    for step in (1, 3, 50, 1000, len(raw)):
        events, bodies = _client_reading([raw[i:i + step] for i in range(0, len(raw), step)])
        assert isinstance(events[0], h11.Response) and events[0].status_code == 200
        assert b"".join(bytes(b) for b in bodies) == body, step
        assert isinstance(events[-1], h11.EndOfMessage)
