"""Reads through real mounts: integrity under caps and faults, random patterns, request economy.

Expected bytes come from rebuilding the emulator's seeded account in this process;
request counts come from the emulator's admin endpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import build_config, spawn_emulator
from accounthelp import account_files, emulator_media
from fusehelp import fuse_required, mounted
from rcfs.emulator import seed

pytestmark = fuse_required


def _args(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_files = account_files


DIRECT_IO_ALL = ["--direct-io-above", "1"]  # every file bypasses the page cache
FAULTY = [
    pytest.param(dict(), [], id="plain"),
    pytest.param(dict(max_bytes_per_response=65_536), [], id="byte-cap-64k"),
    pytest.param(dict(faults={"reset_rate": 0.15, "truncate_rate": 0.15, "error_rate": 0.1, "seed": 3}), [],
                 id="resets-truncation-5xx"),
    pytest.param(dict(max_bytes_per_response=65_536), DIRECT_IO_ALL, id="direct-io-byte-cap-64k"),
]


def _check_mmap(path: Path, want: bytes, direct: bool) -> None:
    """Shared and private mmap read `want`; with direct I/O the kernel refuses shared maps."""
    with open(path, "rb") as fh:
        if direct:
            with pytest.raises(OSError) as err:
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            assert err.value.errno == errno.ENODEV
        else:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                assert _sha(mm[:]) == _sha(want)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as mm:  # MAP_PRIVATE
            assert _sha(mm[:]) == _sha(want)


@pytest.mark.parametrize("options, mount_args", FAULTY)
def test_every_file_is_exact_with_cat_dd_and_mmap(options, mount_args, tmp_path):
    options = dict(window=0.5, hide_sizes=0.3, **options)
    srv = spawn_emulator(tmp_path, **options)
    try:
        store = seed.build_store(build_config(**{k: v for k, v in options.items()}))
        with mounted(tmp_path / "m", state_dir=tmp_path / "s", extra_args=mount_args, **_args(srv)):
            files = [p for p in _files(tmp_path / "m") if "/mms/" not in str(p) or p.suffix != ".txt"]
            rng = random.Random(5)
            for path in files:
                media = emulator_media(store, path)
                want = media.read(0, media.size)
                got = subprocess.run(["cat", str(path)], capture_output=True, check=True, timeout=120).stdout
                assert _sha(got) == _sha(want), path
                # dd at a random offset and size
                off = rng.randrange(0, max(1, media.size))
                count = rng.randrange(1, 64)
                out = subprocess.run(["dd", f"if={path}", "bs=1", f"skip={off}", f"count={count}",
                                      "iflag=skip_bytes,count_bytes", "status=none"],
                                     capture_output=True, check=True, timeout=60).stdout
                assert out == want[off:off + count], (path, off, count)
            path = next(p for p in files if p.stat().st_size > 0)
            media = emulator_media(store, path)
            _check_mmap(path, media.read(0, media.size), direct=mount_args == DIRECT_IO_ALL)
        assert srv.stats()["rate_limited"] == 0
    finally:
        srv.stop()


BIG_MODES = {
    "page-cache": ["--direct-io-above", "off"],
    "direct-io": ["--direct-io-above", "100M"],  # the 200 MB and 400 MB recordings
}


@pytest.fixture(scope="module", params=sorted(BIG_MODES))
def big_mount(request, tmp_path_factory):
    """A mount of the bench account (recordings of ~200 MB and more), in both read modes."""
    base = tmp_path_factory.mktemp("big")
    options = dict(scale="bench", window=1.0, limit_heavy=1000, limit_medium=1000)
    srv = spawn_emulator(base, **options)
    try:
        store = seed.build_store(build_config(**options))
        with mounted(base / "m", state_dir=base / "s", extra_args=BIG_MODES[request.param], **_args(srv)):
            yield srv, store, base / "m"
    finally:
        srv.stop()


def _recording(mnt: Path, store, size_range: tuple[int, int]) -> Path:
    for path in (mnt / "recordings").iterdir():
        media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
        if size_range[0] <= media.size <= size_range[1]:
            return path
    raise LookupError(size_range)


def test_sequential_cat_of_200mb_is_one_request_and_rereading_is_free(big_mount):
    srv, store, mnt = big_mount
    path = _recording(mnt, store, (150_000_000, 250_000_000))
    media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
    srv.reset_stats()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == _sha(media.read(0, media.size))
    assert srv.stats()["requests"].get("recording-content", 0) == 1
    srv.reset_stats()
    with open(path, "rb") as fh:  # the page cache or the block cache keeps it: no request
        fh.read(4 << 20)
        fh.seek(media.size - (3 << 20))
        assert fh.read() == media.read(media.size - (3 << 20), 3 << 20)
    assert srv.stats()["requests"].get("recording-content", 0) == 0


def test_mmap_of_a_large_recording(big_mount, request):
    srv, store, mnt = big_mount
    path = _recording(mnt, store, (150_000_000, 250_000_000))
    media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
    direct = "direct-io" in request.node.callspec.id
    _check_mmap(path, media.read(0, media.size), direct=direct)


def test_sequential_read_resumes_after_resets_with_one_request_each(big_mount):
    srv, store, mnt = big_mount
    path = _recording(mnt, store, (350_000_000, 450_000_000))
    media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
    srv.configure(faults={"reset_rate": 0.0})
    srv.reset_stats()
    # Force two resets: the emulator resets the Nth media bodies (seeded), then stops.
    srv.configure(faults={"reset_rate": 1.0, "seed": 11})
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        first = fh.read(1 << 20)  # the first body is cut, the reader resumes from its last byte
        h.update(first)
        srv.configure(faults={"reset_rate": 0.0})
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    stats = srv.stats()
    resets_seen = stats.get("faults", {}).get("reset", 0)
    assert resets_seen >= 1  # the fault really happened
    assert h.hexdigest() == _sha(media.read(0, media.size))
    assert stats["requests"].get("recording-content", 0) == 1 + resets_seen, stats
    assert stats["rate_limited"] == 0


def test_freed_block_memory_is_reused_without_page_faults():
    """rcfs.mount.keep_block_memory: after 64 blocks of 1 MiB are freed, the next 64 land in
    the same, still mapped memory. Without it glibc hands that memory back (munmap, or a
    trimmed heap) and every 4 KiB of the next blocks is a page fault again: 16,383 here,
    the cost a cold read paid in its socket reads (bench-results/anchors-read.md)."""
    script = (
        "import resource, sys\n"
        "from rcfs.mount import keep_block_memory\n"
        "assert keep_block_memory(1 << 20, 256 << 20)\n"
        "faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "blocks = [bytearray(1 << 20) for _ in range(64)]\n"
        "del blocks\n"
        "before = faults()\n"
        "blocks = [bytearray(1 << 20) for _ in range(64)]\n"
        "print(faults() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert int(out.stdout) < 64 * 256 // 16, out.stdout  # 16,384 pages were refilled


def _read_whole(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as fh:
        data = fh.read()
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # the next read asks rcfs again
    return data


def test_reading_a_file_larger_than_the_cache_keeps_the_other_files_cached(big_mount):
    """Drop-behind (rcfs.reader): a sequential read of a recording larger than the whole
    block cache (400 MB through 256 MiB) lets go of the blocks it has passed, so it leaves
    the cache almost as it found it: a voicemail read before is still cached after it
    (its re-read costs no request), and the cache grew by a few MiB, not up to 256."""
    srv, store, mnt = big_mount
    big = _recording(mnt, store, (350_000_000, 450_000_000))
    big_media = store.recordings[os.getxattr(big, "user.rc.id").decode()].media
    small = next(p for p in _files(mnt, ("voicemail",)) if p.suffix != ".txt")
    small_media = emulator_media(store, small)
    assert _read_whole(small) == small_media.read(0, small_media.size)
    cached_before = json.loads(os.getxattr(mnt, "user.rc.status"))["cache"]["bytes"]  # other tests' files too
    srv.reset_stats()
    h = hashlib.sha256()
    with open(big, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == _sha(big_media.read(0, big_media.size))
    cache = json.loads(os.getxattr(mnt, "user.rc.status"))["cache"]
    assert cache["bytes"] <= cached_before + (8 << 20), (cached_before, cache)  # was: all 256 MiB
    assert _read_whole(small) == small_media.read(0, small_media.size)
    requests = srv.stats()["requests"]
    assert requests.get("recording-content", 0) == 1, requests
    assert requests.get("message-content", 0) == 0, requests  # the voicemail was still cached


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=st.lists(st.tuples(st.integers(0, 200_000_000), st.integers(1, 3_000_000)), min_size=1, max_size=6))
def test_random_read_patterns_match(big_mount, reads):
    srv, store, mnt = big_mount
    path = _recording(mnt, store, (150_000_000, 250_000_000))
    media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
    with open(path, "rb", buffering=0) as fh:
        for off, n in reads:
            off %= media.size
            fh.seek(off)
            got = fh.read(n)
            assert got == media.read(off, min(n, media.size - off)), (off, n)


def test_copying_faxes_of_known_size_costs_one_request_each(tmp_path):
    srv = spawn_emulator(tmp_path, window=1.0, hide_sizes=0.0)
    try:
        with mounted(tmp_path / "m", state_dir=tmp_path / "s", **_args(srv)):
            faxes = sorted((tmp_path / "m" / "faxes").iterdir())
            assert all(p.stat().st_size > 0 for p in faxes)  # sizes known from the listing
            srv.reset_stats()
            subprocess.run(["cp", *map(str, faxes), str(tmp_path)], check=True, timeout=300)
            stats = srv.stats()
            assert stats["requests"].get("message-content", 0) == len(faxes), stats["requests"]
            srv.reset_stats()
            subprocess.run(["cat", *map(str, faxes)], capture_output=True, check=True, timeout=60)
            assert srv.stats()["requests"].get("message-content", 0) == 0
        assert stats["rate_limited"] == 0
    finally:
        srv.stop()
