"""The company case (issue 15): an admin's mount of `--scale company` (240 extensions,
20,000 recorded calls), with the API requests each step costs (the emulator's counters).

Run via `scripts/bench --company [--window 1] [--month YYYY-MM]`. Prints a Markdown table
and writes it to bench-results/company.md. One fresh mount (empty state), then in order:

1. `ls /company/users`: the extension list (Medium, 1,000 a page);
2. `find /company -maxdepth 3`: every mailbox's folder names (no request per mailbox)
   and the month folders of /company/recordings: the whole account call log, 1,000 calls
   a Heavy request;
3. `ls -l` of one month of recordings (default: the last whole month, about 1,500
   recordings, 0.9 GB): answered from memory;
4. `rsync -a` of that month into a temporary folder: one Heavy content request per
   recording. The Heavy group is the limit (10 requests a window), so the figure is
   the time over the *Heavy floor* (requests / (limit / window), what the quota allows
   at best), with the 429s met;
5. the same `rsync -a` again (the Archiver recipe's second night): nothing copied, no
   content request.

The window is shortened (`--window`, real: 60 s) so that the run takes minutes; the
request counts do not depend on it, and the ratio to the floor is what carries over.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import ROOT, Emulator, emulator, table  # noqa: E402
from benchlib.read_bench import mount  # noqa: E402

HEAVY = 10  # the emulator's default Heavy limit per window


def _requests(emu: Emulator) -> tuple[str, dict]:
    stats = emu.admin("GET", "/_emulator/stats")
    emu.admin("POST", "/_emulator/stats/reset")
    routes = {k: v for k, v in stats["requests"].items() if not k.startswith("admin") and v}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(routes.items()))
    return f"{sum(routes.values())}" + (f" ({detail})" if detail else "") + f"; 429: {stats['rate_limited']}", stats


def _timed(*cmd: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")
    return time.monotonic() - t0, done


def company_rows(window: float, month: str | None) -> list[list[str]]:
    rows: list[list[str]] = []
    with emulator("--scale", "company", "--window", str(window)) as emu:
        with mount(emu, "--listing-wait", "3600") as (mp, _proc):
            company = mp / "company"
            emu.admin("POST", "/_emulator/stats/reset")
            secs, done = _timed("ls", str(company / "users"))
            req, _ = _requests(emu)
            rows.append(["`ls /company/users`", f"{secs:.2f} s ({done.stdout.count(chr(10)):,} extensions)", req,
                         "the extension list, 1,000 a page"])
            secs, done = _timed("find", str(company), "-maxdepth", "3")
            req, _ = _requests(emu)
            rows.append(["`find /company -maxdepth 3`", f"{secs:.2f} s ({done.stdout.count(chr(10)):,} entries)", req,
                         "the whole account call log, 1,000 calls a Heavy request"])
            months = sorted(os.listdir(company / "recordings"))
            chosen = month or (months[-2] if len(months) > 1 else months[0])
            secs, done = _timed("ls", "-l", str(company / "recordings" / chosen))
            files = done.stdout.count("\n") - 1
            req, _ = _requests(emu)
            rows.append([f"`ls -l` of {chosen}", f"{secs:.2f} s ({files:,} recordings)", req, "from memory"])
            dest = Path(tempfile.mkdtemp(prefix="rcfs-bench-company-"))
            try:
                secs, _ = _timed("rsync", "-a", f"{company}/recordings/{chosen}/", str(dest))
                req, stats = _requests(emu)
                heavy = stats["groups"].get("heavy", 0)
                floor = heavy / (HEAVY / window)
                size = sum(p.stat().st_size for p in dest.iterdir())
                rows.append([f"`rsync -a` of {chosen}", f"{secs:.1f} s ({files:,} files, {size / 2**20:,.0f} MiB)",
                             req, f"Heavy floor {floor:.1f} s ({heavy} Heavy requests at {HEAVY}/{window:g} s): "
                                  f"**{secs / floor:.2f}x the floor**"])
                secs, done = _timed("rsync", "-a", "--stats", f"{company}/recordings/{chosen}/", str(dest))
                req, _ = _requests(emu)
                copied = next((line.split(":")[1].strip() for line in done.stdout.splitlines()
                               if line.startswith("Number of regular files transferred")), "?")
                rows.append([f"`rsync -a` of {chosen} again", f"{secs:.2f} s ({copied} files copied)", req,
                             "the Archiver recipe's next night"])
            finally:
                shutil.rmtree(dest, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=1.0, help="emulator rate-limit window in s (real: 60)")
    parser.add_argument("--month", help="the month to copy (default: the last whole month)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "company.md")
    args = parser.parse_args(argv)
    rows = company_rows(args.window, args.month)
    text = table(rows, ["measurement", "time", "API requests", "note"])
    header = (f"rcfs company benchmark, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} cores, emulator `--scale company` on loopback, window {args.window:g} s "
              f"(`scripts/bench --company`)\n\n")
    print(header + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
