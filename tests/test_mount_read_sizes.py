"""How big the reads are that reach rcfs through a real mount (issue 20, item 2).

Every FUSE read request is a round trip through Python, so the CPU a cold read costs per
GB falls with the size of the requests: files report `st_blksize` = the block size
(1 MiB), which is the buffer `cat` and `cp` read with, and with direct I/O (files of at
least `--direct-io-above`) each such read reaches rcfs as one request of that size. The
counts come from the mount's own report (`rcfs status`: `reads`).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess

import pytest

from conftest import build_config, spawn_emulator
from fusehelp import fuse_required, mounted
from rcfs import status
from rcfs.emulator import seed

pytestmark = fuse_required

MiB = 1 << 20


@pytest.fixture(scope="module")
def bench_mount(tmp_path_factory):
    base = tmp_path_factory.mktemp("sizes")
    options = dict(scale="bench", window=1.0, limit_heavy=1000, limit_medium=1000)
    srv = spawn_emulator(base, **options)
    try:
        store = seed.build_store(build_config(**options))
        with mounted(base / "m", state_dir=base / "s", server_url=srv.platform, client_id=srv.client_id,
                     client_secret=srv.client_secret, jwt=srv.jwt, extra_args=["--direct-io-above", "100M"]):
            yield store, base / "m"
    finally:
        srv.stop()


def _recording(mnt, store, low: int, high: int):
    for path in sorted((mnt / "recordings").iterdir()):
        media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
        if low <= media.size <= high:
            return path, media
    raise LookupError((low, high))


def test_files_report_a_1_mib_block_size_to_stat(bench_mount):
    store, mnt = bench_mount
    small = sorted((mnt / "faxes").iterdir())[0]
    big, _ = _recording(mnt, store, 150_000_000, 250_000_000)
    out = subprocess.run(["stat", "-c", "%o", str(small), str(big)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(MiB), str(MiB)]


def test_cat_of_a_direct_io_recording_reaches_rcfs_in_1_mib_reads_with_every_byte(bench_mount):
    store, mnt = bench_mount
    path, media = _recording(mnt, store, 150_000_000, 250_000_000)
    before = status.read(str(mnt))["reads"]
    h = hashlib.sha256()
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        for piece in iter(lambda: cat.stdout.read(4 * MiB), b""):
            h.update(piece)
    assert cat.returncode == 0
    assert h.hexdigest() == hashlib.sha256(media.read(0, media.size)).hexdigest()
    after = status.read(str(mnt))["reads"]
    calls = after["calls"] - before["calls"]
    # one request per MiB (the kernel may add one at the end of the file), never 128 KiB ones
    assert math.ceil(media.size / MiB) <= calls <= math.ceil(media.size / MiB) + 1, calls
    assert after["largest"] == MiB


def _read_ahead_kb(mnt) -> int:
    target = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as fh:
        bdi = next(line.split()[2] for line in fh if line.split()[4] == target)
    with open(f"/sys/class/bdi/{bdi}/read_ahead_kb") as fh:
        return int(fh.read())


def test_a_file_opened_right_after_mounting_already_reads_in_1_mib_requests(tmp_path):
    """A file keeps the read-ahead it was opened with, so the mount's must be raised
    before the first file can be opened, not some time after INIT (it was 0.2 s later:
    a player started by the same script as the mount read 128 KiB requests throughout)."""
    options = dict(window=1.0, limit_heavy=1000, limit_medium=1000)
    srv = spawn_emulator(tmp_path, **options)
    try:
        store = seed.build_store(build_config(**options))
        mnt = tmp_path / "m"
        with mounted(mnt, state_dir=tmp_path / "s", server_url=srv.platform, client_id=srv.client_id,
                     client_secret=srv.client_secret, jwt=srv.jwt):
            # The first requests of this mount: the test's own lookups.
            path = sorted((mnt / "recordings").rglob("*.*"))[0]
            assert _read_ahead_kb(mnt) == 1024
            media = store.recordings[os.getxattr(path, "user.rc.id").decode()].media
            assert media.size > 4 * MiB  # read through the page cache (below --direct-io-above)
            before = status.read(str(mnt))["reads"]
            with open(path, "rb") as fh:
                assert fh.read() == media.read(0, media.size)
            after = status.read(str(mnt))["reads"]
            assert after["largest"] == MiB, after
            assert after["calls"] - before["calls"] <= math.ceil(media.size / (512 << 10)), (before, after)
    finally:
        srv.stop()
