"""rcfs.api.tuning: the HTTP stack changes behave exactly like the originals, minus copies."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import h11
import pytest
from packaging.requirements import Requirement
from h11 import _connection, _receivebuffer
from hypothesis import given, settings
from hypothesis import strategies as st

import rcfs.api.client  # noqa: F401 - installs the tuning, as every rcfs process does
from rcfs.api import tuning

LOCK = Path(__file__).resolve().parent.parent / "constraints.txt"
TUNED = ("httpx", "httpcore", "h11")  # whose internals rcfs/api/tuning.py changes
ORIGINAL = _receivebuffer.ReceiveBuffer
PATCHED = _connection.ReceiveBuffer


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    """{distribution: version} from constraints.txt (`name==version` lines)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, ver = line.partition("==")
            assert sep and ver and ";" not in ver, f"not an exact pin: {line!r}"
            pins[_canonical(name)] = ver.strip()
    return pins


def _closure(requirement: str, extras: set[str], seen: dict[str, str]) -> None:
    """Walk the installed requirements of `requirement` (with `extras`) into `seen`."""
    name = _canonical(requirement)
    if name in seen and not extras:
        return
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return  # an optional dependency that is not installed
    seen[name] = dist.version
    for text in dist.requires or []:
        req = Requirement(text)
        env_ok = [req.marker is None or req.marker.evaluate({"extra": e}) for e in (extras or {""})]
        if any(env_ok) and _canonical(req.name) != name:
            _closure(req.name, set(req.extras), seen)


def _installed_from_the_lock() -> None:
    """Skip (fail in CI) when this venv was not installed with constraints.txt."""
    pins = _locked()
    drift = {n: (metadata.version(n), pins.get(n)) for n in TUNED if metadata.version(n) != pins.get(n)}
    if drift:
        msg = f"installed versions differ from constraints.txt (installed, locked): {drift}; scripts/test installs the lock"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(msg)
        pytest.skip(msg)


def test_the_lock_pins_exact_versions_of_the_tuned_libraries():
    pins = _locked()
    for name in TUNED:
        assert name in pins, f"constraints.txt does not pin {name}"


def test_the_lock_covers_everything_rcfs_and_its_extras_install():
    # A dependency added to pyproject.toml without regenerating the lock would install
    # whatever is newest: that is what the lock exists to prevent.
    _installed_from_the_lock()
    pins = _locked()
    installed: dict[str, str] = {}
    _closure("rcfs", {"emulator", "test"}, installed)
    installed.pop("rcfs")
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"not in constraints.txt: {unpinned} (regenerate it, see its header)"
    wrong = {n: (v, pins[n]) for n, v in installed.items() if pins[n] != v}
    assert not wrong, f"installed differs from constraints.txt (installed, locked): {wrong}"


def test_every_change_is_active_with_the_locked_libraries():
    # The versions in constraints.txt are the ones the tuning was written and measured
    # against. If a library upgrade makes a change inapplicable, rcfs still works but
    # slower: this test is what notices (run it when changing the lock).
    _installed_from_the_lock()
    assert tuning.install() == {"socket_reads": True, "pass_through_buffer": True, "read_cap": True}
    assert PATCHED is not ORIGINAL and issubclass(PATCHED, ORIGINAL)
    import httpcore._async.http11 as h11conn

    assert h11conn.AsyncHTTP11Connection.READ_NUM_BYTES >= 1 << 20


# Pythons a fresh install runs on besides this one: Debian 12's own python3 (3.11.2), what
# scripts/test uses on a fresh Debian 12. A dependency with a marker that only an older
# Python meets (redis needs async-timeout below 3.11.3) is absent from a lock frozen on a
# newer Python, and a fresh machine installed whatever version was newest (issue 20 item 9).
OTHER_PYTHONS = ("3.11.2",)


def test_the_lock_covers_what_debian_12s_python_installs_too():
    _installed_from_the_lock()
    pins = _locked()
    installed: dict[str, str] = {}
    _closure("rcfs", {"emulator", "test"}, installed)
    unpinned = {}
    for name in installed:
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is None or _canonical(req.name) in pins or _canonical(req.name) == name:
                continue
            extras = {"emulator", "test"} if name == "rcfs" else {""}
            for version in OTHER_PYTHONS:
                env = {"python_full_version": version, "python_version": ".".join(version.split(".")[:2])}
                if any(req.marker.evaluate({**env, "extra": e}) for e in extras):
                    unpinned.setdefault(_canonical(req.name), []).append(f"{name} on Python {version}")
    assert not unpinned, f"not in constraints.txt (needed on another Python): {unpinned}"


def test_rcfs_itself_pins_nothing():
    # `pip install rcfs` without the lock must still resolve: ranges only, no == pins.
    requires = metadata.distribution("rcfs").requires or []
    core = [r for r in requires if "extra ==" not in r]
    assert core and not any("==" in r for r in core), core


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
