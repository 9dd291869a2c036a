"""Freshness: how soon a new fax or voicemail shows in `ls`, and what watching costs.

`scripts/bench --freshness` runs both on one emulator (production timings: 60 s rate-limit
window, so the gateway's idleTimeout is 1800 s and rcfs's listing TTLs are its defaults),
one mount after the other:

* push: rcfs as it mounts by default (push over the WebSocket gateway);
* polling: the same mount with --no-push (today's behaviour: a folder is re-checked on
  look once its TTL, 30 s for messages, has passed).

Event to `ls`: a watcher lists /faxes and /voicemail every 50 ms (what a script waiting
for a fax does, much faster than a person); each event is a fax or a voicemail injected
at the service (`POST /_emulator/messages`); the time is from the injection's answer to
the first listing that shows the file. Median and worst of N events, one at a time,
--spacing seconds apart (default 2: 30 a minute; each event costs push one message-sync
request, and back to back they exceed the Light group's 50 a minute, where the limiter,
not push, sets the pace; --spacing 0 shows that).

Requests per idle hour: nothing arrives; a watcher lists the four media folders every
2 s (an open file manager re-reading, or `watch ls`) for --idle seconds; the API
requests the emulator counted (admin calls excluded) are scaled to an hour. Push
heartbeats are counted apart (they are frames on the open socket, not API requests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import ROOT, Emulator, emulator, table  # noqa: E402
from benchlib.read_bench import mount  # noqa: E402

FOLDERS = ("faxes", "voicemail", "recordings", "mms")


def api_requests(emu: Emulator) -> int:
    stats = emu.admin("GET", "/_emulator/stats")
    return sum(n for name, n in stats["requests"].items() if not name.startswith("admin-"))


def push_state(mp: Path) -> str:
    import json
    return json.loads(os.getxattr(mp, "user.rc.status"))["push"]["state"]


def event_to_ls(emu: Emulator, mp: Path, events: int, timeout: float, spacing: float) -> list[float]:
    out = []
    for i in range(events):
        if i:
            time.sleep(spacing)
        kind, folder = (("Fax", "faxes"), ("VoiceMail", "voicemail"))[i % 2]
        msg = emu.admin("POST", "/_emulator/messages", {"type": kind})
        t0 = time.monotonic()
        needle = f"_{msg['id']}"
        while not any(needle in n for n in os.listdir(mp / folder)):
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"event {i} not visible within {timeout} s")
            time.sleep(0.05)
        out.append(time.monotonic() - t0)
    return out


def idle(emu: Emulator, mp: Path, seconds: float) -> tuple[int, int]:
    """(API requests, gateway heartbeats) while a watcher lists every 2 s for `seconds`."""
    before = api_requests(emu)
    beats = emu.admin("GET", "/_emulator/push")["counts"].get("heartbeats", 0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for folder in FOLDERS:
            os.listdir(mp / folder)
        time.sleep(2.0)
    return (api_requests(emu) - before,
            emu.admin("GET", "/_emulator/push")["counts"].get("heartbeats", 0) - beats)


def run(args: argparse.Namespace) -> tuple[list[list[str]], list[str]]:
    rows, notes = [], []
    with emulator("--window", "60") as emu:
        for mode in ("push", "polling"):
            extra = ("--push",) if mode == "push" else ()
            with mount(emu, *extra) as (mp, _proc):
                for folder in FOLDERS:
                    os.listdir(mp / folder)  # listed once, as a file manager would
                if mode == "push":
                    deadline = time.monotonic() + 60
                    while push_state(mp) != "up":
                        if time.monotonic() > deadline:
                            raise RuntimeError("push channel did not come up")
                        time.sleep(0.1)
                n = args.events if mode == "push" else args.polling_events
                times = event_to_ls(emu, mp, n, timeout=120, spacing=args.spacing)
                requests, beats = idle(emu, mp, args.idle)
                per_hour = requests * 3600 / args.idle
                rows.append([mode, str(n), f"{1000 * statistics.median(times):.0f} ms",
                             f"{1000 * max(times):.0f} ms", f"{per_hour:.0f} ({requests} in {args.idle:g} s)",
                             f"{beats * 3600 / args.idle:.0f}" if mode == "push" else "-"])
                notes.append(f"{mode}: event-to-ls seconds: " + " ".join(f"{t:.3f}" for t in times))
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50, help="events for push (default 50)")
    parser.add_argument("--polling-events", type=int, default=50, help="events for polling (default 50; "
                        "each waits up to the 30 s TTL)")
    parser.add_argument("--spacing", type=float, default=2.0, help="seconds between events (default 2)")
    parser.add_argument("--idle", type=float, default=300.0, help="seconds of idle watching per mode (default 300)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "freshness.md")
    args = parser.parse_args()
    rows, notes = run(args)
    header = (f"rcfs freshness, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
              f"emulator on loopback, 60 s window (`scripts/bench --freshness --events {args.events} "
              f"--polling-events {args.polling_events} --spacing {args.spacing:g} --idle {args.idle:g}`)\n\n")
    text = table(rows, ["mode", "events", "event to ls, median", "worst", "API requests per idle hour",
                        "heartbeats per hour"])
    body = header + text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(body)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(body)


if __name__ == "__main__":
    main()
