"""Cross-file read-ahead through a real mount: a process that reads a folder's files one
after another (`cp -r`, `rsync`, `cp a b c`) has the next small files prefetched, at no
extra request; a lone `cat` prefetches nothing.

Requests are counted at the emulator (`message-content`); whether an open was answered
from prefetched bytes is read from the mount's own counters (`rcfs status`: block-cache
misses are the files whose read had to start a download itself).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from conftest import build_config, spawn_emulator
from accounthelp import emulator_media
from fusehelp import fuse_required, mounted
from rcfs import status
from rcfs.emulator import seed

pytestmark = fuse_required

# Sizes known from the listing (prefetch needs them); limits raised so that the budget
# never holds a prefetch back (tests/test_reader_emulator.py covers the budget).
OPTIONS = dict(window=1.0, hide_sizes=0.0, limit_medium=1000, limit_light=1000, limit_heavy=1000)


def _args(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_requests(srv) -> int:
    return srv.stats()["requests"].get("message-content", 0)


def _quiet(mnt: Path, timeout: float = 30.0) -> dict:
    """The mount's report once no download is in flight (a prefetch shows there until done)."""
    deadline = time.monotonic() + timeout
    while True:
        report = status.read(str(mnt))
        if not report["downloads"]:
            return report
        assert time.monotonic() < deadline, report["downloads"]
        time.sleep(0.05)


@pytest.fixture
def account(tmp_path):
    srv = spawn_emulator(tmp_path, **OPTIONS)
    try:
        store = seed.build_store(build_config(**OPTIONS))
        with mounted(tmp_path / "m", state_dir=tmp_path / "s", **_args(srv)):
            yield srv, store, tmp_path / "m"
    finally:
        srv.stop()


@pytest.mark.parametrize("folder", ["faxes", "voicemail"])
def test_cp_r_of_a_folder_costs_one_request_per_file_and_opens_are_prefetched(account, tmp_path, folder):
    srv, store, mnt = account
    files = sorted((mnt / folder).iterdir())
    assert len(files) >= 6, files
    assert all(p.stat().st_size > 0 for p in files)  # sizes known from the listing
    before = _quiet(mnt)
    srv.reset_stats()
    subprocess.run(["cp", "-r", str(mnt / folder), str(tmp_path / "copy")], check=True, timeout=300)
    after = _quiet(mnt)
    for path in files:
        media = emulator_media(store, path)
        assert _sha((tmp_path / "copy" / path.name).read_bytes()) == _sha(media.read(0, media.size)), path
    # One request per file: no file twice (the open joins the prefetch or finds it
    # cached), none wasted (the scan ends at the folder's end).
    assert _content_requests(srv) == len(files), srv.stats()["requests"]
    # Only the first two files, read before the scan was recognised, started their own
    # download: every later open was answered by a prefetch.
    assert after["cache"]["misses"] - before["cache"]["misses"] == 2, after["cache"]
    assert srv.stats()["rate_limited"] == 0


def test_rsync_and_cp_of_listed_files_are_prefetched_too(account, tmp_path):
    """Name order (rsync; `cp a b c` as a shell glob lists them) is followed like `cp -r`'s."""
    srv, store, mnt = account
    faxes = sorted((mnt / "faxes").iterdir())
    voicemail = sorted((mnt / "voicemail").iterdir())
    before = _quiet(mnt)
    srv.reset_stats()
    subprocess.run(["rsync", "-r", f"{mnt / 'faxes'}/", str(tmp_path / "rsync")], check=True, timeout=300)
    middle = _quiet(mnt)
    assert _content_requests(srv) == len(faxes), srv.stats()["requests"]
    assert middle["cache"]["misses"] - before["cache"]["misses"] == 2, middle["cache"]
    subprocess.run(["cp", *map(str, voicemail), str(tmp_path)], check=True, timeout=300)
    after = _quiet(mnt)
    assert _content_requests(srv) == len(faxes) + len(voicemail), srv.stats()["requests"]
    # Two before the scan is recognised, and a third when the first two files are also
    # neighbours in readdir order: until the third open tells the orders apart, only
    # files that come next in both would be prefetched.
    assert after["cache"]["misses"] - middle["cache"]["misses"] <= 3, after["cache"]
    for path in faxes:
        media = emulator_media(store, path)
        assert (tmp_path / "rsync" / path.name).read_bytes() == media.read(0, media.size), path


def test_a_lone_cat_prefetches_nothing(account):
    srv, store, mnt = account
    files = sorted((mnt / "faxes").iterdir())
    srv.reset_stats()
    for path in files[3:6]:  # neighbours, each read by a process of its own
        media = emulator_media(store, path)
        got = subprocess.run(["cat", str(path)], capture_output=True, check=True, timeout=60).stdout
        assert got == media.read(0, media.size), path
    _quiet(mnt)
    assert _content_requests(srv) == 3, srv.stats()["requests"]


def _walk_neighbours(folder: Path) -> set[tuple[str, str]]:
    """Pairs (a, b) where b follows a in one of the orders tools walk a folder in:
    readdir order (tar), name order (rsync, a shell glob), inode order (cp -r)."""
    listed = os.listdir(folder)
    orders = [listed, sorted(listed, key=os.fsencode), sorted(listed, key=lambda n: os.stat(folder / n).st_ino)]
    return {(o[i], o[i + 1]) for o in orders for i in range(len(o) - 1)}


def test_files_opened_out_of_any_walk_order_prefetch_nothing(account):
    """One process reading files of which no two in a row are neighbours in any walk
    order is no scan: one request per file read, nothing more."""
    srv, store, mnt = account
    folder = mnt / "faxes"
    neighbours = _walk_neighbours(folder)
    rest = sorted(os.listdir(folder))
    random.Random(11).shuffle(rest)
    picked = [rest.pop()]
    while rest:
        nxt = next((n for n in rest if (picked[-1], n) not in neighbours), None)
        if nxt is None:
            break
        rest.remove(nxt)
        picked.append(nxt)
    assert len(picked) >= 10, picked
    srv.reset_stats()
    subprocess.run(["cat", *(str(folder / n) for n in picked)], capture_output=True, check=True, timeout=60)
    _quiet(mnt)
    assert _content_requests(srv) == len(picked), srv.stats()["requests"]


def test_two_neighbours_prefetch_one_file_which_a_later_open_gets_from_cache(account):
    """`cat a b` of name neighbours looks like the start of a scan: it costs one request
    more (the file after b, fetched ahead), and no more; that file is then read by
    another process without a request."""
    srv, store, mnt = account
    folder = mnt / "faxes"
    listed = os.listdir(folder)
    by_name = sorted(listed, key=os.fsencode)
    by_inode = sorted(listed, key=lambda n: os.stat(folder / n).st_ino)
    others = {(o[i], o[i + 1]) for o in (listed, by_inode) for i in range(len(o) - 1)}
    # Neighbours by name only, so that the file after them is unambiguous.
    i = next(i for i in range(len(by_name) - 2) if (by_name[i], by_name[i + 1]) not in others)
    a, b, c = (folder / n for n in by_name[i : i + 3])
    srv.reset_stats()
    got = subprocess.run(["cat", str(a), str(b)], capture_output=True, check=True, timeout=60).stdout
    before = _quiet(mnt)
    want = b"".join(emulator_media(store, p).read(0, emulator_media(store, p).size) for p in (a, b))
    assert got == want
    assert _content_requests(srv) == 3, srv.stats()["requests"]
    media = emulator_media(store, c)
    assert subprocess.run(["cat", str(c)], capture_output=True, check=True, timeout=60).stdout == \
        media.read(0, media.size)
    after = _quiet(mnt)
    assert _content_requests(srv) == 3, srv.stats()["requests"]
    assert after["cache"]["misses"] == before["cache"]["misses"], after["cache"]


def test_under_a_tight_budget_a_scan_is_still_one_request_per_file_and_no_429(tmp_path):
    """With Medium (message content) at 10 requests a window, prefetch only uses room
    beyond the foreground reserve: the copy still costs one request per file, never
    meets a 429, and is exact."""
    options = dict(OPTIONS, limit_medium=10, window=1.0)
    srv = spawn_emulator(tmp_path, **options)
    try:
        store = seed.build_store(build_config(**options))
        mnt = tmp_path / "m"
        with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
            files = sorted((mnt / "voicemail").iterdir())
            srv.reset_stats()
            subprocess.run(["cp", "-r", str(mnt / "voicemail"), str(tmp_path / "copy")], check=True, timeout=300)
            _quiet(mnt)
            assert _content_requests(srv) == len(files), srv.stats()["requests"]
            assert srv.stats()["rate_limited"] == 0
            for path in files:
                media = emulator_media(store, path)
                assert (tmp_path / "copy" / path.name).read_bytes() == media.read(0, media.size), path
    finally:
        srv.stop()
