"""Emulator streaming throughput with curl (see scripts/bench_emulator)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import curl_seconds, emulator, recordings_by_size, table  # noqa: E402

RUNS = 3


def main() -> None:
    rows = []
    with emulator("--scale", "bench", "--rate-limits", "false") as emu:
        token = emu.token()
        for rid, url, size in recordings_by_size(emu, token)[:3]:
            times = [curl_seconds(url, token) for _ in range(RUNS)]
            med = statistics.median(times)
            rows.append([f"recording {rid}", f"{size / 1e6:.0f} MB", f"{size / med / 1e6:.0f} MB/s",
                         " ".join(f"{t:.2f}" for t in times)])
    print(table(rows, ["object", "size", "curl median", f"seconds ({RUNS} runs)"]))


if __name__ == "__main__":
    main()
