"""A mount keeps its connection to the media host alive from one file to the next.

Production serves media over HTTPS, so a new connection costs a TCP and a TLS handshake
(two round trips) before its first byte; the emulator charges that as `handshake_ms` and
counts the connections it sees per host. rcfs used to leave each media answer the moment
the file's last byte was in, one step before the end of the HTTP message, and httpcore
closes a connection whose answer was not read to its end: every file read opened a new
connection, and paid the handshakes again, first byte included.
"""

from __future__ import annotations

import os

import pytest

from accounthelp import expected_bytes, mounted_account
from fusehelp import fuse_required

pytestmark = fuse_required

EMU_OPTIONS = dict(window=1.0, limit_medium=1000, limit_heavy=1000)


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    with mounted_account(tmp_path_factory.mktemp("keepalive"), **EMU_OPTIONS) as account:
        yield account


def _sample(mnt):
    """Voicemail audio, faxes and recordings of several sizes, smallest first (some are
    whole in one socket read, some span several 1 MiB blocks)."""
    files = [p for folder in ("voicemail", "faxes") for p in sorted((mnt / folder).iterdir())
             if p.suffix in (".mp3", ".wav", ".pdf", ".tif")]
    return sorted(files, key=lambda p: p.stat().st_size)[::4] + _recordings(mnt)[:2]


def _recordings(mnt):
    # (by name: a recording's size is provisional until it is opened)
    return sorted((mnt / "recordings").rglob("*.*"))


def test_files_read_one_after_another_share_one_media_connection(account):
    srv, store, mnt = account
    files = _sample(mnt)
    assert len(files) >= 8
    srv.configure(faults={"handshake_ms": 20})
    srv.reset_stats()
    sizes = []
    try:
        for path in files:
            expected = expected_bytes(store, path)
            assert path.read_bytes() == expected, path.name
            sizes.append(len(expected))
    finally:
        srv.configure(faults={"handshake_ms": 0})
    assert min(sizes) < 64 << 10 and max(sizes) > 2 << 20, sizes
    stats = srv.stats()
    contents = sum(n for route, n in stats["requests"].items() if route.endswith("-content"))
    assert contents >= len(files)
    # One connection carried every answer: each file's answer was read to its end.
    assert stats["connections"].get("media", 0) == 1, (stats["connections"], contents, len(files))


def test_a_file_read_again_after_its_cache_is_gone_still_reuses_the_connection(account):
    """A ranged answer that ends before the file does (a block fetched alone) is read to
    its end too: the byte range asked for is exactly what the body carries."""
    srv, store, mnt = account
    path = _recordings(mnt)[-1]
    srv.reset_stats()
    with open(path, "rb", buffering=0) as fh:
        for offset in (3 << 20, 1 << 20, 5 << 20, 0):  # jumps: each a block of its own
            os.lseek(fh.fileno(), offset, os.SEEK_SET)
            assert fh.read(4096) == expected_bytes(store, path)[offset:offset + 4096]
    stats = srv.stats()
    assert stats["connections"].get("media", 0) <= 1, stats["connections"]
