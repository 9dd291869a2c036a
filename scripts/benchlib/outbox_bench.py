"""Outbox benchmark: 30 faxes queued at once against the Heavy quota, with a recording
read by `cat` in the middle of the queue, and what the settle time costs (issue 19).
Writes bench-results/outbox.md.

Figures: wall time from the `cp` until the 30th fax was accepted by the API, against the
floor the quota allows ((ceil(30 / limit) - 1) x window: the first `limit` go at once,
each later batch one window after) plus the settle time (no fax may leave before it);
POSTs and 429s counted at the emulator; the `cat`'s time against the same read on an
idle quota. The same queue is measured in the same run on a mount with `--outbox-settle 0`
(sent at close, as before issue 19) and one with the default settle time, side by side.
"""

from __future__ import annotations

import argparse
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
from benchlib.common import ROOT, emulator, table  # noqa: E402
from benchlib.read_bench import mount  # noqa: E402

RESULTS = ROOT / "bench-results" / "outbox.md"
TO = "+14155550123"


def _pdf(i: int) -> bytes:
    body = f"BT /F1 12 Tf 72 720 Td (fax {i}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _states(folder: Path, names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(folder / n, "user.rc.state").decode()
        except OSError:
            out[n] = "?"
    return out


def _cat_seconds(path: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t0


def _queue(emu, mp: Path, number: str, args, reader: Path | None) -> dict:
    """Copy `args.faxes` PDFs to `number`; optionally `cat` `reader` once the first batch is out."""
    folder = mp / "outbox" / "fax" / number
    folder.mkdir()
    src = Path(tempfile.mkdtemp(prefix="rcfs-outbox-bench-"))
    names = [f"fax{i:02}.pdf" for i in range(args.faxes)]
    try:
        for i, n in enumerate(names):
            (src / n).write_bytes(_pdf(i) + number.encode())
        emu.admin("POST", "/_emulator/stats/reset")
        t0 = time.monotonic()
        subprocess.run(f"cp {src}/*.pdf {folder}/", shell=True, check=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    out = {"cp": time.monotonic() - t0, "cat": None, "cat_started": None}
    sent_at: dict[str, float] = {}
    deadline = t0 + 4 * args.window * math.ceil(args.faxes / 10) + 60
    while len(sent_at) < len(names) and time.monotonic() < deadline:
        for n, st in _states(folder, names).items():
            if st in ("sent", "delivered", "failed") and n not in sent_at:
                sent_at[n] = time.monotonic() - t0
        if reader is not None and out["cat"] is None and len(sent_at) >= 10:
            # The first batch is out, the rest waits for the window: a reader arrives.
            out["cat_started"] = time.monotonic() - t0
            out["cat"] = _cat_seconds(reader)
        time.sleep(0.05)
    out["elapsed"] = max(sent_at.values()) if sent_at else float("nan")
    out["first"] = min(sent_at.values()) if sent_at else float("nan")
    out["stats"] = emu.admin("GET", "/_emulator/stats")
    out["failed"] = sum(1 for s in _states(folder, names).values() if s == "failed")
    return out


def run(args: argparse.Namespace) -> list[list[str]]:
    limit = 10
    with emulator("--scale", "demo", "--window", str(args.window), "--send-delay", "0.5") as emu:
        with mount(emu, "--outbox-settle", "0") as (mp, _proc):
            time.sleep(args.window + 1)  # the listing's Heavy slot expires: a clean quota
            at_close = _queue(emu, mp, "+14155550122", args, None)
        time.sleep(args.window + 1)
        with mount(emu, "--outbox-settle", f"{args.settle:g}") as (mp, _proc):
            recs = sorted((mp / "recordings").iterdir(), key=lambda p: p.name)
            time.sleep(args.window + 1)
            alone = _cat_seconds(recs[0])
            time.sleep(args.window + 1)
            plain = _queue(emu, mp, "+14155550123", args, None)
            time.sleep(args.window + 1)
            busy = _queue(emu, mp, "+14155550124", args, recs[1])
    rows = []
    for label, r, settle in (("queued at once (cp), sent at close (--outbox-settle 0)", at_close, 0.0),
                             (f"queued at once (cp), settle {args.settle:g} s (the default)", plain, args.settle),
                             (f"queued at once, settle {args.settle:g} s, a recording read meanwhile", busy,
                              args.settle)):
        heavy = r["stats"]["groups"].get("heavy", 0) if isinstance(r["stats"].get("groups"), dict) else None
        heavy = heavy or (r["stats"]["requests"].get("fax-send", 0) + (1 if r["cat"] is not None else 0))
        floor = (math.ceil(heavy / limit) - 1) * args.window + settle
        posts = r["stats"]["requests"].get("fax-send", 0)
        rows.append([f"{args.faxes} faxes {label}, Heavy {limit} per {args.window:g} s",
                     f"{r['elapsed']:.2f} s vs floor {floor:.2f} s = {r['elapsed'] / floor:.2f}x (goal <= 1.1)",
                     f"{posts} POSTs, {heavy} Heavy requests, {r['stats']['rate_limited']} x 429, "
                     f"{r['failed']} failed",
                     f"cp returned after {r['cp']:.2f} s (spooled, fsync'd); until the API accepted the last "
                     "fax; floor = (ceil(Heavy requests / limit) - 1) x window + settle time"])
    rows.append([f"what the {args.settle:g} s settle time costs (same run)",
                 f"+{plain['elapsed'] - at_close['elapsed']:.2f} s until the last fax was accepted "
                 f"({plain['elapsed']:.2f} s vs {at_close['elapsed']:.2f} s)",
                 f"first fax accepted after {plain['first']:.2f} s vs {at_close['first']:.2f} s",
                 "no fax leaves before it has been closed and untouched for the settle time; "
                 "the rest of the queue waits for the quota as before"])
    rows.append(["the recording's cat during the second queue",
                 f"{busy['cat']:.2f} s (alone on an idle quota: {alone:.2f} s)",
                 f"started at {busy['cat_started']:.2f} s, when the first {limit} faxes had used the window",
                 f"it waits for the next Heavy slot, ahead of the {args.faxes - limit} queued faxes (Priority.OUTBOX); "
                 f"its own quota allows no less than the {args.window:g} s window"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faxes", type=int, default=30)
    parser.add_argument("--window", type=float, default=6.0, help="emulator rate-limit window (s)")
    parser.add_argument("--settle", type=float, default=5.0, help="the settle time measured against 0 (s)")
    args = parser.parse_args()
    rows = run(args)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = (f"rcfs outbox benchmark, {stamp}, {os.cpu_count()} cores, {platform.python_version()}, "
            "emulator on loopback (`scripts/bench_outbox`)\n\n"
            + table(rows, ["measurement", "result", "economy", "how"]) + "\n")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
