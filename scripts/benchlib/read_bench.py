"""Read benchmarks through a real mount, side by side with curl on the same emulator.

Run via `scripts/bench`. Prints a Markdown table and writes it to bench-results/bench.md
(the README's performance section quotes it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import mmap
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import CLIENT_ID, CLIENT_SECRET, JWT, ROOT, Emulator, curl_seconds, emulator, table  # noqa: E402

MB = 1e6
FUSERMOUNT = shutil.which("fusermount3") or "fusermount"


@contextlib.contextmanager
def mount(emu: Emulator, *extra: str) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A fresh `rcfs mount` (empty caches, fresh state dir) of the emulator's account."""
    tmp = Path(tempfile.mkdtemp(prefix="rcfs-bench-"))
    mp = tmp / "mnt"
    mp.mkdir()
    env = dict(os.environ, RC_SERVER_URL=emu.platform, RC_CLIENT_ID=CLIENT_ID, RC_CLIENT_SECRET=CLIENT_SECRET,
               RC_JWT=JWT, RC_MEDIA_URL=emu.media)
    log = open(tmp / "mount.log", "w")
    # --no-background: the idle-time learner's probes would land in the request counts.
    proc = subprocess.Popen([sys.executable, "-m", "rcfs", "mount", str(mp), "--state-dir", str(tmp / "state"),
                             "--no-background",
                             *extra], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mp):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mount failed:\n" + (tmp / "mount.log").read_text()[-2000:])
            time.sleep(0.05)
        yield mp, proc
    finally:
        subprocess.run([FUSERMOUNT, "-u", "-z", str(mp)], capture_output=True)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def recording_path(mp: Path, rid: str) -> Path:
    for p in (mp / "recordings").iterdir():
        if os.getxattr(p, "user.rc.id").decode() == rid:
            return p
    raise LookupError(rid)


def bench_recordings(emu: Emulator) -> dict[str, tuple[str, int]]:
    """Recording id -> (content URL, size) from the call log and a 1-byte probe each."""
    import httpx

    token = emu.token()
    body = emu.get("/extension/~/call-log", token, dateFrom="2000-01-01T00:00:00Z", perPage=1000,
                   recordingType="All")
    out = {}
    for rec in body["records"]:
        r = rec["recording"]
        resp = httpx.get(r["contentUri"], headers={"Authorization": "Bearer " + token, "Range": "bytes=0-0"},
                         timeout=30)
        out[r["id"]] = (r["contentUri"], int(resp.headers["content-range"].rsplit("/", 1)[1]))
    return out


def timed_cat(path: Path) -> float:
    t0 = time.monotonic()
    with open(path, "rb") as fh:
        while fh.read(1 << 20):
            pass
    return time.monotonic() - t0


def direct_read_seconds(path: Path, size: int) -> float:
    """Read the whole file with O_DIRECT (bypasses the kernel page cache; hits our cache)."""
    buf = mmap.mmap(-1, 1 << 20)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        t0 = time.monotonic()
        off = 0
        while off < size:
            n = os.preadv(fd, [buf], off)
            if n <= 0:
                break
            off += n
        return time.monotonic() - t0
    finally:
        os.close(fd)


def reader_alone_seconds(emu: Emulator, url: str) -> float:
    """Sequential 1 MiB reads of `url` through RingCentralClient + Reader, no FUSE."""
    import trio

    from rcfs.api.client import Credentials, RingCentralClient
    from rcfs.reader import Reader, Source

    async def main() -> float:
        async with RingCentralClient(Credentials(emu.platform, CLIENT_ID, CLIENT_SECRET, JWT, media_url=emu.media)) as client:
            reader = Reader(client)
            async with trio.open_nursery() as nursery:
                await nursery.start(reader.run)
                t0 = time.monotonic()
                handle = await reader.open(Source("bench", url, None))
                off = 0
                while block := await reader.read(handle, off, 1 << 20):
                    off += len(block)
                elapsed = time.monotonic() - t0
                nursery.cancel_scope.cancel()
        return elapsed

    return trio.run(main)


def heavy_requests(emu: Emulator) -> int:
    return emu.admin("GET", "/_emulator/stats")["groups"].get("heavy", 0)


def run(args: argparse.Namespace) -> list[list[str]]:
    rows: list[list[str]] = []
    runs = args.runs
    # 1-3 and 5 measure the read path, not the quota: the emulator advertises (and
    # enforces) limits far above what these runs use. 4 measures the quota.
    unlimited = ["--limit-light", "1000000", "--limit-medium", "1000000", "--limit-heavy", "1000000",
                 "--limit-auth", "1000"]
    with emulator("--scale", "bench", *unlimited) as emu:
        recs = bench_recordings(emu)
        by_size = sorted(recs.items(), key=lambda kv: -kv[1][1])
        big_id, (big_url, big_size) = next(kv for kv in by_size if kv[1][1] <= 1.2e9)  # the ~1 GiB one
        huge_id, (_, huge_size) = by_size[0]  # the ~2 GiB one
        mid_id, (_, mid_size) = next(kv for kv in reversed(by_size) if kv[1][1] >= 150e6)  # ~200 MiB
        token = emu.token()

        # 1. cold sequential read: mount (default options: direct I/O for a file this
        # large) vs curl; 1a. the same through the kernel page cache. Interleaved, each
        # mount fresh, so drift on a shared machine hits all three alike.
        curl_t, mount_t, paged_t = [], [], []
        for _ in range(runs):
            curl_t.append(curl_seconds(big_url, token))
            with mount(emu) as (mp, _):
                mount_t.append(timed_cat(recording_path(mp, big_id)))
            with mount(emu, "--direct-io-above", "off") as (mp, _):
                paged_t.append(timed_cat(recording_path(mp, big_id)))
        c, m, pc = statistics.median(curl_t), statistics.median(mount_t), statistics.median(paged_t)
        secs = lambda ts: " ".join(f"{t:.2f}" for t in ts)  # noqa: E731
        rows.append(["1. cold sequential read, %.0f MB recording" % (big_size / MB),
                     f"mount {big_size / m / MB:.0f} MB/s, curl {big_size / c / MB:.0f} MB/s",
                     f"ratio mount/curl = {c / m:.2f} (goal >= 0.8)",
                     f"medians of {runs}, default options (direct I/O at this size); "
                     f"mount s: {secs(mount_t)}; curl s: {secs(curl_t)}"])
        rows.append(["1a. same read through the page cache", f"mount {big_size / pc / MB:.0f} MB/s",
                     f"ratio mount/curl = {c / pc:.2f}",
                     f"--direct-io-above off; medians of {runs}; mount s: {secs(paged_t)}"])

        # 1b. the same read through rcfs' client and reader in this process, without FUSE:
        # separates the cost of the HTTP/cache path from the kernel round trips.
        alone = [reader_alone_seconds(emu, big_url) for _ in range(runs)]
        a = statistics.median(alone)
        rows.append(["1b. same read, rcfs reader without FUSE", f"{big_size / a / MB:.0f} MB/s",
                     f"ratio reader/curl = {c / a:.2f}", "RingCentralClient + Reader in-process, 1 MiB reads"])

        # 2. warm re-read from the block cache (O_DIRECT so the kernel page cache is not used).
        with mount(emu, "--cache-size", "512M") as (mp, _):
            path = recording_path(mp, mid_id)
            timed_cat(path)
            before = emu.admin("GET", "/_emulator/stats")["total_requests"]
            warm = [direct_read_seconds(path, mid_size) for _ in range(runs)]
            after = emu.admin("GET", "/_emulator/stats")["total_requests"]
        w = statistics.median(warm)
        rows.append([f"2. warm re-read from the block cache, {mid_size / MB:.0f} MB",
                     f"{mid_size / w / MB:.0f} MB/s", f"{after - before - 1} requests (stats call excluded)",
                     f"O_DIRECT 1 MiB reads, median of {runs}"])

        # 3. random 4 KiB reads over the ~1 GB file.
        with mount(emu) as (mp, _):
            path = recording_path(mp, big_id)
            os.stat(path)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 4096)
            rng = random.Random(7)
            lat = []
            try:
                os.preadv(fd, [buf], 0)  # learn the size first (open already did)
                before = emu.admin("GET", "/_emulator/stats")["groups"].get("heavy", 0)
                for _ in range(args.random_reads):
                    off = rng.randrange(0, big_size // 4096) * 4096
                    t0 = time.perf_counter()
                    os.preadv(fd, [buf], off)
                    lat.append(time.perf_counter() - t0)
                after = emu.admin("GET", "/_emulator/stats")["groups"].get("heavy", 0)
            finally:
                os.close(fd)
        lat.sort()
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        rows.append([f"3. random 4 KiB reads over {big_size / MB:.0f} MB ({args.random_reads} reads)",
                     f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", f"{(after - before) / len(lat):.2f} requests/read",
                     "O_DIRECT preads at random 4 KiB-aligned offsets"])

        # 6. the price of direct I/O: an application reading in small pieces (32 KiB, as
        # sha256sum and ffmpeg do) makes one FUSE request per read instead of riding the
        # kernel's read-ahead. 300 MB of the ~1 GB recording, each mount fresh.
        small = {}
        for label, extra in (("direct I/O", []), ("page cache", ["--direct-io-above", "off"])):
            with mount(emu, *extra) as (mp, _):
                path = recording_path(mp, big_id)
                t0 = time.monotonic()
                subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=32k", f"count={300_000_000 // 32768}"],
                               capture_output=True, check=True)
                small[label] = 300 / (time.monotonic() - t0)
        rows.append(["6. 32 KiB reads (dd bs=32k), 300 MB of the same recording",
                     f"direct I/O {small['direct I/O']:.0f} MB/s, page cache {small['page cache']:.0f} MB/s",
                     "the cost of direct I/O for small readers", "cold, one run each"])

        # 5. peak RSS while reading ~2 GB with a 256 MiB cache.
        with mount(emu, "--cache-size", "256M") as (mp, proc):
            path = recording_path(mp, huge_id)
            timed_cat(path)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm_kb = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
        rows.append([f"5. peak RSS reading {huge_size / MB:.0f} MB, --cache-size 256M",
                     f"{hwm_kb / 1024:.0f} MiB", f"goal < {256 + 150} MiB (cache + 150 MB)", "VmHWM of the rcfs process"])

    # 4. copy 20 recordings under the real Heavy quota, window scaled down.
    window = args.window
    # The 20 quota-benchmark recordings (a few MB each), known from the seed without requests.
    from rcfs.emulator import seed
    from rcfs.emulator.config import EmulatorConfig

    store = seed.build_store(EmulatorConfig(scale="bench"))
    small_ids = {r.id for r in store.recordings.values() if 1.5e6 <= r.media.size <= 8e6}
    with emulator("--scale", "bench", "--window", str(window)) as emu:
        with mount(emu) as (mp, _):
            files = sorted((mp / "recordings").iterdir())  # one Heavy call-log request
            time.sleep(window + 0.5)  # start the copy with a clean window
            emu.admin("POST", "/_emulator/stats/reset")
            chosen = [p for p in files if os.getxattr(p, "user.rc.id").decode() in small_ids][:20]
            dest = Path(tempfile.mkdtemp(prefix="rcfs-bench-copy-"))
            try:
                t0 = time.monotonic()
                subprocess.run(["cp", *map(str, chosen), str(dest)], check=True)
                wall = time.monotonic() - t0
                copied = sum(f.stat().st_size for f in dest.iterdir())
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            stats = emu.admin("GET", "/_emulator/stats")
        heavy = stats["groups"].get("heavy", 0)
        limit = 10
        floor = (math.ceil(heavy / limit) - 1) * window
        rows.append([f"4. cp of 20 recordings ({copied / MB:.0f} MB), Heavy 10 per {window:g} s window",
                     f"{wall:.2f} s vs floor {floor:.2f} s = {wall / floor if floor else float('nan'):.2f}x (goal <= 1.1)",
                     f"{stats['rate_limited']} x 429, {heavy} Heavy requests",
                     "floor = (ceil(requests/limit) - 1) x window"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--random-reads", type=int, default=300)
    parser.add_argument("--window", type=float, default=6.0, help="Heavy window for test 4 (real: 60)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.md")
    args = parser.parse_args()
    rows = run(args)
    text = table(rows, ["measurement", "result", "economy / goal", "how"])
    header = (f"rcfs read benchmarks, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} cores, emulator on loopback (`scripts/bench`)\n\n")
    print(header + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
