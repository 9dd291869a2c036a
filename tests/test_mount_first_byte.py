"""A file's first bytes reach the reader as they arrive, not once its whole answer is in.

A file of known size up to `--small-file-max` (8 MiB: faxes, voicemail, most recordings) is
fetched with one ranged request. That request used to hand its bytes over only when all of
them were in, so on a slow link opening a 1.5 MB voicemail in a player waited for the last
byte before the first. The emulator's `chunk_delay_ms` is such a link: it pauses after every
MiB it sends. The test asserts order, not time: the first 4 KiB are read while the server
has sent only the first MiB of the answer.
"""

from __future__ import annotations

import os

import pytest

from accounthelp import emulator_media, expected_bytes, mounted_account
from fusehelp import fuse_required

pytestmark = fuse_required

EMU_OPTIONS = dict(window=1.0, limit_medium=1000, limit_heavy=1000)
SLOW_LINK_PAUSE_MS = 3000  # per MiB sent: the rest of the answer is seconds behind its first MiB


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    with mounted_account(tmp_path_factory.mktemp("firstbyte"), **EMU_OPTIONS) as account:
        yield account


def test_the_first_bytes_of_a_small_file_come_before_the_rest_of_its_answer(account):
    srv, store, mnt = account
    # A voicemail over 1.2 MiB whose size the listing told exactly (so one fetch, no probe).
    path = next(p for p in sorted((mnt / "voicemail").iterdir(), key=lambda p: -p.stat().st_size)
                if p.suffix in (".mp3", ".wav") and emulator_media(store, p).size == p.stat().st_size)
    size = path.stat().st_size
    assert size > 1.2 * (1 << 20), (path.name, size)
    expected = expected_bytes(store, path)
    srv.configure(faults={"chunk_delay_ms": SLOW_LINK_PAUSE_MS})
    srv.reset_stats()
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            first = os.read(fd, 4096)
            served_then = srv.stats()["bytes_served"]
            rest = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        finally:
            os.close(fd)
    finally:
        srv.configure(faults={"chunk_delay_ms": 0})
    assert first == expected[:4096]
    assert first + rest == expected
    stats = srv.stats()
    assert stats["requests"].get("message-content") == 1  # one fetch for the whole file
    # The reader had its first bytes while the answer was still short of its end.
    assert served_then < size, (served_then, size)
