"""Listing benchmarks: `ls -f` and `ls -l` of a folder of 10,000 and 100,000 faxes
through a real mount, with the API requests each costs (the emulator's own counters).

Run via `scripts/bench --listing [--sizes 10000,100000] [--window 1]`. Prints a
Markdown table and writes it to bench-results/listing.md.

Per size, one fresh mount (empty state) of an emulator seeded with that many faxes:

1. cold `ls -f`: the first listing (one FSync for the sync token, then the message
   store at 1000 records a page) plus the READDIRs;
2. warm `ls -f` within the listing TTL: READDIRs answered from memory;
3. `ls -l` within the TTL: the same plus an attribute per entry (readdirplus);
4. `ls -l` after the TTL: one ISync request, then as 3.

The mount waits for listings as long as they take (`--listing-wait 1800`), so the cold
time is measured even where it exceeds rcfs' default 15 s deadline. The emulator's
window is shortened (`--window`, real: 60 s) so that the Light group's
50 requests a window do not make the cold listing of 100,000 faxes (101 requests)
a matter of pacing; the request counts do not depend on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import ROOT, Emulator, emulator, table  # noqa: E402
from benchlib.read_bench import mount  # noqa: E402

TTL = 30.0  # rcfs' default listing TTL


def _timed_ls(path: Path, *flags: str) -> tuple[float, int]:
    """(seconds, entries) of `ls FLAGS path`, its output counted, not kept."""
    t0 = time.monotonic()
    out = subprocess.run(["ls", *flags, str(path)], check=True, capture_output=True, timeout=1800).stdout
    return time.monotonic() - t0, out.count(b"\n")


def _requests(emu: Emulator) -> str:
    """API requests since the last reset, by route (admin routes left out)."""
    stats = emu.admin("GET", "/_emulator/stats")
    emu.admin("POST", "/_emulator/stats/reset")
    routes = {k: v for k, v in stats["requests"].items() if not k.startswith("admin") and v}
    total = sum(routes.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(routes.items()))
    return f"{total}" + (f" ({detail})" if detail else "") + f"; 429: {stats['rate_limited']}"


def listing_rows(sizes: list[int], window: float, ttl: float = TTL) -> list[list[str]]:
    """The table rows for `ls -f` / `ls -l` of each folder size."""
    rows: list[list[str]] = []
    for n in sizes:
        with emulator("--scale", "listing", "--faxes", str(n), "--window", str(window)) as emu:
            # --listing-wait: the cold listing is measured however long it takes (with the
            # default 15 s a slower one would be EAGAIN and go on in the background).
            # --no-background: the learner's probes would be counted as the listing's requests
            with mount(emu, "--listing-ttl", str(ttl), "--listing-wait", "1800", "--no-background") as (mp, _proc):
                emu.admin("POST", "/_emulator/stats/reset")
                secs, entries = _timed_ls(mp / "faxes", "-f")
                listed_at = time.monotonic()  # the listing's TTL runs from here
                rows.append([f"{n:,} faxes: cold `ls -f`", f"{secs:.2f} s ({entries - 2:,} files)",
                             _requests(emu), "first listing: FSync + message-store pages"])
                secs, _ = _timed_ls(mp / "faxes", "-f")
                rows.append([f"{n:,} faxes: warm `ls -f`", f"{secs:.2f} s", _requests(emu), "within the TTL"])
                secs, entries = _timed_ls(mp / "faxes", "-l")
                rows.append([f"{n:,} faxes: `ls -l`", f"{secs:.2f} s ({entries - 1:,} files)", _requests(emu),
                             "within the TTL"])
                time.sleep(max(0.0, ttl - (time.monotonic() - listed_at)) + 1.0)
                secs, _ = _timed_ls(mp / "faxes", "-l")
                rows.append([f"{n:,} faxes: `ls -l` after the TTL", f"{secs:.2f} s", _requests(emu),
                             "one ISync, then from memory"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="fax counts, comma-separated (default: 10000,100000)")
    parser.add_argument("--window", type=float, default=1.0, help="emulator rate-limit window in s (real: 60)")
    parser.add_argument("--ttl", type=float, default=TTL, help="rcfs --listing-ttl for the run (default: 30)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "listing.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = listing_rows(sizes, args.window, args.ttl)
    text = table(rows, ["measurement", "time", "API requests", "note"])
    header = (f"rcfs listing benchmarks, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} cores, emulator on loopback, window {args.window:g} s "
              f"(`scripts/bench --listing`)\n\n")
    print(header + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
