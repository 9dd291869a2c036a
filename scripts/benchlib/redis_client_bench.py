"""Cost per request of the fleet's Redis client under trio (issue 18).

Each variant runs the same ACQUIRE Lua script (rcfs.api.shared_budget) `--calls` times in a
row against a private redis-server on a unix socket, inside one trio program:

* redis-py in a worker thread: `SharedBudget.acquire` itself (trio.to_thread.run_sync with
  its own CapacityLimiter, abandon_on_cancel, a trio deadline per call): what rcfs runs;
* coredis 6.9 (anyio): native awaits under trio, the script through `register_script`;
* redis-py called directly: blocks the trio loop (every FUSE handler with it) for each call,
  shown only as the lower bound.

Then a stalled server (SIGSTOP): how long a call takes to give up under a 0.5 s deadline,
and whether the next call after SIGCONT works. Writes bench-results/redis-client.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import ROOT, table  # noqa: E402
from benchlib.fleet_bench import redis_server  # noqa: E402

from rcfs.api.shared_budget import ACQUIRE, SharedBudget  # noqa: E402

RESULTS = ROOT / "bench-results" / "redis-client.md"
ARGS = lambda member: [10**9, 60000, 50, 240000, member, 120000, 50, 0.2, "0", 5000, "w" + member, 0]  # noqa: E731
KEYS = ("log", "fly", "pen", "blk", "cfg", "peers", "queue", "asked")


def pct(samples: list[float]) -> tuple[float, float, float]:
    s = sorted(samples)
    return (statistics.median(s) * 1e6, s[int(len(s) * 0.9)] * 1e6, s[int(len(s) * 0.99)] * 1e6)


def redis_pid(url: str) -> int:
    import redis

    return int(redis.Redis(unix_socket_path=url[len("unix://"):]).info("server")["process_id"])


async def thread_variant(url: str, calls: int) -> dict:
    out: dict = {}
    async with SharedBudget(url, scope="bench-thread") as shared:
        for _ in range(50):
            await shared.acquire("light", limit=10**9, window=60, max_wait=240)
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            res = await shared.acquire("light", limit=10**9, window=60, max_wait=240)
            samples.append(time.perf_counter() - t0)
            assert res is not None and res.granted
        out["lat"] = pct(samples)
        pid = redis_pid(url)
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            res = await shared.acquire("light", limit=10**9, window=60, max_wait=240)
            out["stalled"] = time.perf_counter() - t0
            assert res is None
        finally:
            os.kill(pid, signal.SIGCONT)
        await trio.sleep(5)  # past the re-probe backoff
        out["after"] = (await shared.acquire("light", limit=10**9, window=60, max_wait=240)) is not None
    return out


async def coredis_variant(url: str, calls: int) -> dict:
    import coredis

    out: dict = {}
    client = coredis.Redis(unix_socket_path=url[len("unix://"):], decode_responses=True,
                           stream_timeout=0.5, connect_timeout=0.5)
    async with client:
        script = client.register_script(ACQUIRE)
        keys = [f"bench-coredis:{k}" for k in KEYS]
        for i in range(50):
            await script(keys=keys, args=ARGS(f"w{i}"))
        samples = []
        for i in range(calls):
            t0 = time.perf_counter()
            res = await script(keys=keys, args=ARGS(f"m{i}"))
            samples.append(time.perf_counter() - t0)
            assert int(res[0]) == 1
        out["lat"] = pct(samples)
        pid = redis_pid(url)
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            with trio.move_on_after(0.5):
                await script(keys=keys, args=ARGS("stalled"))
            out["stalled"] = time.perf_counter() - t0
        finally:
            os.kill(pid, signal.SIGCONT)
        await trio.sleep(1)
        try:
            with trio.fail_after(2):
                out["after"] = int((await script(keys=keys, args=ARGS("after")))[0]) == 1
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out["after"] = f"no ({type(exc).__name__})"
    return out


async def direct_variant(url: str, calls: int) -> dict:
    import redis

    r = redis.Redis(unix_socket_path=url[len("unix://"):], decode_responses=True)
    script = r.register_script(ACQUIRE)
    keys = [f"bench-direct:{k}" for k in KEYS]
    for i in range(50):
        script(keys=keys, args=ARGS(f"w{i}"))
    samples = []
    for i in range(calls):
        t0 = time.perf_counter()
        script(keys=keys, args=ARGS(f"m{i}"))
        samples.append(time.perf_counter() - t0)
    r.close()
    return {"lat": pct(samples), "stalled": None, "after": None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import coredis
    import redis

    rows = []
    with redis_server() as url:
        for name, fn in (("redis-py in a worker thread (rcfs)", thread_variant),
                         ("coredis, native anyio under trio", coredis_variant),
                         ("redis-py called directly (blocks the loop)", direct_variant)):
            r = trio.run(fn, url, args.calls)
            p50, p90, p99 = r["lat"]
            rows.append([name, f"{p50:.0f}", f"{p90:.0f}", f"{p99:.0f}",
                         "-" if r["stalled"] is None else f"{r['stalled']:.2f} s",
                         "-" if r["after"] is None else ("yes" if r["after"] is True else str(r["after"]))])
            print(rows[-1], flush=True)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    text = f"""# The fleet's Redis client under trio ({now})

`scripts/bench_redis_client` (scripts/benchlib/redis_client_bench.py): {args.calls} calls of the
ACQUIRE script in a row per variant, one trio program, a private redis-server on a unix socket.

- machine: {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}; shared with other jobs while running
- rcfs git {git}, Python {platform.python_version()}, trio {trio.__version__}, redis-py {redis.__version__},
  coredis {coredis.__version__}

{table(rows, ["client", "p50 µs", "p90 µs", "p99 µs", "SIGSTOPped server: gave up after", "next call after SIGCONT works"])}

The deadline is 0.5 s in both async variants (SharedBudget's own, and `trio.move_on_after(0.5)`
around coredis). One acquire is paid once per API request, which the Heavy group paces at one
per 6 s and even the Light group at one per 1.2 s.
"""
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
