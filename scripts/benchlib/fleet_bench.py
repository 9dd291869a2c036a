"""Fleet benchmark (issue 18): K = 1, 2, 4 mounts of one account copy disjoint sets of the
recordings at once, each mount pacing alone (today's behaviour, the anchor) or sharing one
budget through a real redis-server (`--shared-budget`). Writes bench-results/fleet.md.

Figures per row: wall time from the start of the copies until the last one ended, against
the floor the Heavy budget allows for the requests the service answered
((ceil(R / limit) - 1) x window: the first `limit` go at once, each later batch a window
after); 429s and answered requests counted at the emulator; copies that failed.

Each row gets a fresh emulator (no penalty or count left from the row before) and fresh
mounts; the recordings are listed first and the copy starts one window later, so the
window is empty when the clock starts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import ROOT, emulator, table, terminate  # noqa: E402
from benchlib.read_bench import mount  # noqa: E402

RESULTS = ROOT / "bench-results" / "fleet.md"


@contextlib.contextmanager
def redis_server():
    """A private redis-server on a unix socket (no TCP, no persistence), stopped by PID."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="rcfs-bench-redis-"))
    sock = tmp / "redis.sock"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        terminate(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def run_row(k: int, shared: bool, args) -> dict:
    emu_args = ["--window", str(args.window), "--limit-heavy", str(args.limit)]
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(emulator(*emu_args))
        extra = ["--shared-budget", stack.enter_context(redis_server())] if shared else []
        mounts = [stack.enter_context(mount(emu, *extra))[0] for _ in range(k)]
        names = sorted(os.listdir(mounts[0] / "recordings"))
        for mp in mounts[1:]:
            os.listdir(mp / "recordings")
        time.sleep(args.window + 1)  # the listings' requests leave the window
        emu.admin("POST", "/_emulator/stats/reset")
        out = Path(tempfile.mkdtemp(prefix="rcfs-bench-fleet-"))
        try:
            t0 = time.monotonic()
            procs = []
            for i, mp in enumerate(mounts):
                dest = out / str(i)
                dest.mkdir()
                procs.append(subprocess.Popen(["cp", *[str(mp / "recordings" / n) for n in names[i::k]], str(dest)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            failed = unfinished = 0
            deadline = t0 + args.row_timeout
            for p in procs:
                try:
                    p.communicate(timeout=max(0.1, deadline - time.monotonic()))
                    failed += p.returncode != 0
                except subprocess.TimeoutExpired:
                    # Pacing alone, mounts can keep each other in the penalty for ever
                    # (every rejected request restarts it): stop the row.
                    p.kill()
                    p.communicate()
                    unfinished += 1
            elapsed = time.monotonic() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        log = [e for e in emu.admin("GET", "/_emulator/requests")["requests"] if e["group"] == "heavy"]
    answered = sum(e["status"] == 200 for e in log)
    floor = (math.ceil(answered / args.limit) - 1) * args.window
    return {"k": k, "shared": shared, "elapsed": elapsed, "answered": answered,
            "rejected": sum(e["status"] == 429 for e in log), "floor": floor, "failed": failed,
            "unfinished": unfinished}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=5.0, help="the emulator's rate-limit window (s)")
    ap.add_argument("--limit", type=int, default=4, help="the Heavy limit per window")
    ap.add_argument("--ks", default="1,2,4", help="mount counts (comma-separated)")
    ap.add_argument("--row-timeout", type=float, default=120.0,
                    help="copies still running after this many seconds are stopped (row: unfinished)")
    ap.add_argument("--modes", default="alone,shared", help="which rows: alone, shared or both")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    started = time.monotonic()
    rows = []
    for k in (int(x) for x in args.ks.split(",")):
        for shared in [m == "shared" for m in args.modes.split(",")]:
            r = run_row(k, shared, args)
            rows.append(r)
            print(f"K={k} {'shared' if shared else 'alone '}: {r['elapsed']:.2f} s, floor {r['floor']:.0f} s, "
                  f"{r['answered']} answered, {r['rejected']} x 429, {r['failed']} copies failed, "
                  f"{r['unfinished']} stopped unfinished", flush=True)
    body = [[str(r["k"]), "shared (Redis)" if r["shared"] else "alone (today)",
             (f"> {r['elapsed']:.0f} s, stopped" if r["unfinished"] else f"{r['elapsed']:.2f} s"),
             f"{r['floor']:.0f} s",
             "-" if not r["floor"] else (f"> {r['elapsed'] / r['floor']:.1f}x" if r["unfinished"]
                                         else f"{r['elapsed'] / r['floor']:.2f}x"),
             str(r["answered"]), str(r["rejected"]), f"{r['failed']} failed, {r['unfinished']} stopped"]
            for r in rows]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    text = f"""# A fleet of mounts in one budget ({now})

`scripts/bench --fleet` (scripts/benchlib/fleet_bench.py), {time.monotonic() - started:.0f} s in all.

- machine: {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}; shared with other jobs while running
- rcfs: git {git}, Python {platform.python_version()}; redis-server from Debian, on a unix socket
- account: the demo account's 12 recordings, split evenly between the K mounts (one `cp` each,
  all started at once); Heavy limit {args.limit} per {args.window:g} s window (emulator); each row a fresh
  emulator and fresh mounts; the copy starts with an empty window
- floor: (ceil(answered / {args.limit}) - 1) x {args.window:g} s; "answered": Heavy requests the emulator
  served during the copies (429s not included)

{table(body, ["K", "budget", "time", "floor", "time / floor", "answered", "429s", "cp"])}

A row whose copies were still running after {args.row_timeout:g} s was stopped: its floor is that of the
requests answered until then.
"""
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
