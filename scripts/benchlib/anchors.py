"""rcfs side by side with rclone mount, httpdirfs, curl and the FUSE ceiling (issue 11).

Run via `scripts/bench --anchors [--quick]` as root (FUSE mounts, drop_caches, apt-get).
One emulator process serves the RingCentral API to rcfs and, with `--plain-view true`,
the same bytes as plain HTTP index pages and files to the anchors (rcfs.emulator.plainview);
the emulator's latency and rate limiter apply to both. Systems run interleaved inside each
run, every mount is fresh (empty caches) and the page cache is dropped before every cold
measurement. Writes bench-results/anchors.md (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import math
import mmap
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Callable, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib.common import CLIENT_ID, CLIENT_SECRET, JWT, ROOT, Emulator, emulator, table  # noqa: E402

MB = 1e6
FUSERMOUNT = shutil.which("fusermount3") or "fusermount"
CEILING = Path(__file__).resolve().parent / "ceiling.py"
HUGE = 1_000_000  # "unlimited" rate limits for the cases that do not measure the budget
UNLIMITED = {"light": HUGE, "medium": HUGE, "heavy": HUGE, "auth": 1000}
REAL = {"light": 50, "medium": 40, "heavy": 10, "auth": 5}  # RingCentral's groups, per window
RCFS_READ_AHEAD_KB = 1024  # rcfs's default --read-ahead, applied to the ceiling too


# ------------------------------------------------------------------------------ plumbing
@dataclasses.dataclass
class Mounted:
    root: Path
    pid: int
    argv: list[str]


class Bench:
    """Shared state of one invocation: scratch dir, the commands used, the notes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="rcfs-anchors-"))
        self.commands: dict[str, str] = {}
        self.notes: list[str] = []
        self.rss: dict[tuple[str, str], float] = {}  # (case, system) -> peak MiB
        self.started: list[subprocess.Popen] = []
        self.goals: list[list[str]] = []  # [goal, measured, met?]

    def goal(self, text: str, measured: str, met: bool | None) -> None:
        self.goals.append([text, measured, "-" if met is None else ("yes" if met else "**no**")])

    def record(self, label: str, argv: list[str], emu: Emulator | None = None) -> None:
        text = shlex.join(argv).replace(str(self.tmp), "$TMP")
        if emu is not None:
            text = text.replace(emu.media, "$MEDIA").replace(emu.platform, "$PLATFORM")
        self.commands.setdefault(label, text)

    def note_rss(self, case: str, system: str, pid: int) -> None:
        mib = vm_hwm_mib(pid)
        if mib is not None:
            self.rss[(case, system)] = max(self.rss.get((case, system), 0.0), mib)

    def cleanup(self) -> None:
        for proc in self.started:
            stop(proc)
        for line in open("/proc/self/mounts"):
            mp = line.split()[1]
            if mp.startswith(str(self.tmp)):
                subprocess.run([FUSERMOUNT, "-u", "-z", mp], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:  # not root: say so once in the output
        raise SystemExit(f"cannot drop the page cache ({exc}); run as root") from None


def set_read_ahead(mp: Path, kb: int) -> None:
    """Raise a mount's BDI read-ahead (what rcfs does for itself; used for the ceiling)."""
    target = os.path.realpath(mp)
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if len(fields) > 4 and fields[4] == target:
            Path(f"/sys/class/bdi/{fields[2]}/read_ahead_kb").write_text(str(kb))
            return


def requests_by_route(emu: Emulator) -> dict[str, int]:
    stats = emu.admin("GET", "/_emulator/stats")
    return {k: v for k, v in stats["requests"].items() if not k.startswith("admin-")}


def diff(after: dict[str, int], before: dict[str, int], *, skip_auth: bool = True) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    if skip_auth:
        out = {k: v for k, v in out.items() if not k.startswith("oauth") and k != "token"}
    return out


# "30 ms latency": 30 ms before every answer, and a new connection's TCP and TLS 1.3
# handshakes (two more round trips) before its first: production's media host is HTTPS.
WAN = {"latency_ms": 30, "handshake_ms": 60}
LOOPBACK = {"latency_ms": 0, "handshake_ms": 0}


def configure(emu: Emulator, **changes) -> None:
    emu.admin("POST", "/_emulator/config", changes)


def budget(emu: Emulator, limits: dict[str, int], window: float | None = None) -> None:
    body: dict = {"limits": limits}
    if window is not None:
        body["window"] = window
    configure(emu, **body)
    emu.admin("POST", "/_emulator/ratelimit/reset")


@contextlib.contextmanager
def fuse_process(bench: Bench, label: str, argv: list[str], mp: Path, *, env=None, emu=None,
                 root: Path | None = None, timeout: float = 60, cwd: Path = ROOT) -> Iterator[Mounted]:
    """Start a FUSE daemon in the foreground; unmount and stop it by PID in `finally`."""
    mp.mkdir(parents=True, exist_ok=True)
    bench.record(label, argv, emu)
    log = open(mp.parent / f"{mp.name}.log", "w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, start_new_session=True)
    bench.started.append(proc)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mp):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"{label}: mount failed:\n" + (mp.parent / f"{mp.name}.log").read_text()[-2000:])
            time.sleep(0.05)
        yield Mounted(root or mp, proc.pid, argv)
    finally:
        subprocess.run([FUSERMOUNT, "-u", "-z", str(mp)], capture_output=True)
        stop(proc)
        bench.started.remove(proc)
        log.close()


# ------------------------------------------------------------------------------ systems
@dataclasses.dataclass
class System:
    name: str
    mount: Callable[..., contextlib.AbstractContextManager[Mounted]]


def fresh_dir(bench: Bench, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=bench.tmp))


def rcfs_system(name: str = "rcfs", *extra: str, checkout: Path = ROOT) -> System:
    """rcfs as `python -m rcfs mount`, from this checkout or from `checkout` (another git
    worktree: `--compare-with` measures an older rcfs side by side in the same run; the
    package in the working directory is the one `-m` imports, this venv's libraries)."""
    # An older checkout may predate --no-push (and has no push channel to turn off then).
    push_off = ["--no-push"] if "--no-push" in (checkout / "rcfs" / "cli.py").read_text() else []

    @contextlib.contextmanager
    def mount(bench: Bench, emu: Emulator, case: str = "") -> Iterator[Mounted]:
        d = fresh_dir(bench, "rcfs-")
        env = dict(os.environ, RC_SERVER_URL=emu.platform, RC_CLIENT_ID=CLIENT_ID,
                   RC_CLIENT_SECRET=CLIENT_SECRET, RC_JWT=JWT, RC_MEDIA_URL=emu.media)
        # --no-background: the idle-time learner's probes would land in the request counts;
        # --no-push: so would the push channel's ws token and subscription
        argv = [sys.executable, "-m", "rcfs", "mount", str(d / "mnt"), "--state-dir", str(d / "state"),
                "--no-background", *push_off, *extra]
        with fuse_process(bench, name, argv, d / "mnt", env=env, emu=emu, cwd=checkout) as m:
            yield m
    return System(name, mount)


def rclone_system(mode: str) -> System:
    name = f"rclone {mode}"

    @contextlib.contextmanager
    def mount(bench: Bench, emu: Emulator, case: str = "", extra: tuple[str, ...] = ()) -> Iterator[Mounted]:
        d = fresh_dir(bench, "rclone-")
        argv = ["rclone", "mount", ":http:", str(d / "mnt"), "--http-url", emu.media + "/plain/",
                "--read-only", "--vfs-cache-mode", mode, "--cache-dir", str(d / "cache"),
                "--log-file", str(d / "rclone.log"), *extra]
        with fuse_process(bench, name + (" " + case if extra else ""), argv, d / "mnt", emu=emu) as m:
            yield m
    return System(name, mount)


def httpdirfs_system() -> System:
    @contextlib.contextmanager
    def mount(bench: Bench, emu: Emulator, case: str = "", extra: tuple[str, ...] = ()) -> Iterator[Mounted]:
        d = fresh_dir(bench, "httpdirfs-")
        (d / "cache").mkdir()  # httpdirfs 1.2.5 exits when the cache location is missing
        argv = ["httpdirfs", "-f", "--cache", "--cache-location", str(d / "cache"), *extra,
                emu.media + "/plain/", str(d / "mnt")]
        with fuse_process(bench, "httpdirfs --cache" + (" " + case if extra else ""), argv, d / "mnt", emu=emu) as m:
            yield m
    return System("httpdirfs --cache", mount)


def ceiling_system(direct: bool, files: dict[str, int]) -> System:
    name = "ceiling " + ("direct I/O" if direct else "page cache")

    @contextlib.contextmanager
    def mount(bench: Bench, emu: Emulator | None = None, case: str = "") -> Iterator[Mounted]:
        d = fresh_dir(bench, "ceiling-")
        argv = [sys.executable, str(CEILING), str(d / "mnt"), *(f"{n}={s}" for n, s in files.items())]
        if direct:
            argv.append("--direct-io")
        with fuse_process(bench, name, argv, d / "mnt") as m:
            if not direct:
                time.sleep(0.2)
                set_read_ahead(d / "mnt", RCFS_READ_AHEAD_KB)
            yield m
    return System(name, mount)


# ------------------------------------------------------------------------------ measurements
def read_seconds(path: Path, limit: int | None = None) -> tuple[float, int]:
    """Sequential 1 MiB reads of `path` (up to `limit` bytes): (seconds, bytes).

    Into one page-aligned buffer, as `cat`, `cp` and `dd` read: with direct I/O the kernel
    hands a filesystem at most 256 pages per request, so the unaligned 1 MiB buffer of a
    plain Python `read(1 << 20)` (257 pages) costs two requests per MiB, 1,044,592 and
    3,984 bytes (measured with the ceiling), which no real tool pays."""
    got = 0
    buf = mmap.mmap(-1, 1 << 20)
    view = memoryview(buf)
    t0 = time.monotonic()
    try:
        with open(path, "rb", buffering=0) as fh:
            while limit is None or got < limit:
                n = fh.readinto(view if limit is None else view[:min(1 << 20, limit - got)])
                if not n:
                    break
                got += n
        return time.monotonic() - t0, got
    finally:
        view.release()
        buf.close()


def curl_time(url: str, *extra: str) -> float:
    out = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total}", *extra, url],
                         capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip())


def run_bounded(argv: list[str], timeout: float, m: Mounted) -> None:
    """Run a tool on a mount; past `timeout`, kill the filesystem first (a reader blocked
    in a FUSE request cannot die until the request ends), then the tool."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(m.pid, 9)  # the daemon we started (see fuse_process)
        subprocess.run([FUSERMOUNT, "-u", "-z", str(m.root)], capture_output=True)
        proc.kill()
        proc.communicate(timeout=60)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")


def first_byte_seconds(path: Path) -> float:
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 1)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_runs(xs: list[float], digits: int = 2) -> str:
    return " ".join(f"{x:.{digits}f}" for x in xs)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


# ------------------------------------------------------------------------------ the cases
@dataclasses.dataclass
class Account:
    emu: Emulator
    big: str  # recordings/<name> of the ~1 GB recording
    big_size: int
    mid: str  # recordings/<name> of the 200 MiB recording (its first 30 MB are read)
    mid_size: int
    small: list[str]  # faxes/... and voicemail/... (case 5 and 6)
    small_bytes: int
    vm_audio: list[str]  # voicemail audio files (case 2)


def plain_links(url: str) -> list[str]:
    import re
    text = httpx.get(url, timeout=60).text
    return [urllib.parse.unquote(h) for h in re.findall(r'href="([^"]+)"', text)]


def describe_account(emu: Emulator, quick: bool) -> Account:
    recs = []
    for name in plain_links(emu.media + "/plain/recordings/"):
        r = httpx.head(f"{emu.media}/plain/recordings/{urllib.parse.quote(name)}", timeout=60)
        recs.append((int(r.headers["content-length"]), name))
    recs.sort()
    mid = next(r for r in recs if r[0] >= 150e6)  # 200 MiB
    big = mid if quick else next(r for r in recs if 0.9e9 <= r[0] <= 1.2e9)
    small, total = [], 0
    folders = ("voicemail",) if quick else ("faxes", "voicemail")
    for folder in folders:
        for name in plain_links(f"{emu.media}/plain/{folder}/"):
            r = httpx.get(f"{emu.media}/plain/{folder}/{urllib.parse.quote(name)}", timeout=60)  # renders once
            small.append(f"{folder}/{name}")
            total += len(r.content)
    vm_audio = [p for p in small if p.startswith("voicemail/") and not p.endswith(".txt")]
    return Account(emu, f"recordings/{big[1]}", big[0], f"recordings/{mid[1]}", mid[0], small, total, vm_audio)


def url_of(acct: Account, rel: str) -> str:
    return f"{acct.emu.media}/plain/{urllib.parse.quote(rel)}"


def case1(bench: Bench, acct: Account, systems: list[System], ceilings: list[System]) -> str:
    """Cold sequential reads: the ~1 GB recording, then the first 30 MB of the 200 MiB one."""
    part = 30_000_000
    res: dict[str, dict[str, list[float]]] = {}
    for run in range(bench.args.runs):
        for sysm in [None, *systems, *ceilings]:
            name = "curl" if sysm is None else sysm.name
            big_t: list[float] = res.setdefault(name, {}).setdefault("big", [])
            mid_t = res[name].setdefault("mid", [])
            try:
                if sysm is None:
                    usage0, emu0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_seconds(acct.emu.proc.pid)
                    big_t.append(curl_time(url_of(acct, acct.big)))
                    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    res[name].setdefault("cpu", []).append(
                        (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / (acct.big_size / 1e9))
                    res[name].setdefault("emu", []).append(
                        (cpu_seconds(acct.emu.proc.pid) - emu0) / (acct.big_size / 1e9))
                    mid_t.append(curl_time(url_of(acct, acct.mid), "-r", f"0-{part - 1}"))
                    continue
                is_ceiling = sysm in ceilings
                with sysm.mount(bench, acct.emu, "case1") as m:
                    big_path = m.root / ("big.bin" if is_ceiling else acct.big)
                    mid_path = m.root / ("mid.bin" if is_ceiling else acct.mid)
                    os.stat(big_path), os.stat(mid_path)  # listing is not part of the read
                    # The big file first: httpdirfs 1.2.5 dies when a file is closed while
                    # its next segment is still downloading (Cache_free: could not destroy
                    # w_lock), which the partial 30 MB read does. (In --quick mode both are
                    # the same file, so the 30 MB figure there is warm.)
                    drop_caches()
                    cpu0, emu0 = cpu_seconds(m.pid), cpu_seconds(acct.emu.proc.pid)
                    t, n = read_seconds(big_path)
                    assert n == acct.big_size, f"{name}: read {n} of {acct.big_size} bytes"
                    big_t.append(t)
                    res[name].setdefault("cpu", []).append((cpu_seconds(m.pid) - cpu0) / (n / 1e9))
                    res[name].setdefault("emu", []).append((cpu_seconds(acct.emu.proc.pid) - emu0) / (n / 1e9))
                    drop_caches()
                    t, n = read_seconds(mid_path, part)
                    assert n == part, f"{name}: read {n} of {part} bytes"
                    mid_t.append(t)
                    bench.note_rss("1", name, m.pid)
            except Exception as exc:  # one failing anchor must not hide the others
                bench.notes.append(f"case 1, {name}, run {run + 1}: {exc!r}")
    curl_big, curl_mid = (acct.big_size / median(res["curl"]["big"]), part / median(res["curl"]["mid"]))
    ceil = {c.name: (acct.big_size / median(res[c.name]["big"]), part / median(res[c.name]["mid"])) for c in ceilings}
    rows = []
    for name, r in res.items():
        b = acct.big_size / median(r["big"]) if r["big"] else float("nan")
        s = part / median(r["mid"]) if r["mid"] else float("nan")
        mode_big, mode_mid = io_modes(name, acct)
        cb = ceil.get(f"ceiling {mode_big}", (float("nan"),) * 2)[0] if mode_big else float("nan")
        cm = ceil.get(f"ceiling {mode_mid}", (float("nan"),) * 2)[1] if mode_mid else float("nan")
        # A remote filesystem cannot beat the transfer (curl) nor FUSE (the ceiling): the
        # attainable rate is the lower of the two.
        ab, am = min(curl_big, cb), min(curl_mid, cm)
        remote = mode_big and not name.startswith("ceiling")
        rows.append([name, f"{b / MB:.0f}", f"{b / curl_big:.2f}", f"{b / cb:.2f}" if mode_big else "",
                     f"{b / ab:.2f}" if remote else "",
                     f"{s / MB:.0f}", f"{s / curl_mid:.2f}", f"{s / cm:.2f}" if mode_mid else "",
                     f"{s / am:.2f}" if remote else "",
                     f"{median(r.get('cpu', [])):.2f} / {median(r.get('emu', [])):.2f}",
                     fmt_runs(r["big"]) + " / " + fmt_runs(r["mid"])])
    rate = {row[0]: (float(row[1]), float(row[5]), row[3], row[7]) for row in rows}
    if "rcfs" in rate:
        rb, rm, cbr, cmr = rate["rcfs"]
        best_b = max((v[0] for k, v in rate.items() if k.startswith(("rclone", "httpdirfs"))), default=float("nan"))
        best_m = max((v[1] for k, v in rate.items() if k.startswith(("rclone", "httpdirfs"))), default=float("nan"))
        bench.goal("1. cold read >= 0.9x curl, big file", f"{rb / (curl_big / MB):.2f}x", rb >= 0.9 * curl_big / MB)
        bench.goal("1. cold read >= 0.8x curl, 30 MB", f"{rm / (curl_mid / MB):.2f}x", rm >= 0.8 * curl_mid / MB)
        bench.goal("1. ahead of every anchor on both", f"{rb / best_b:.2f}x / {rm / best_m:.2f}x the best anchor",
                   rb > best_b and rm > best_m)
        bench.goal("1. >= 0.9x the FUSE ceiling in the same I/O mode", f"{cbr} (big) / {cmr} (30 MB)",
                   float(cbr) >= 0.9 and float(cmr) >= 0.9)
        bench.goal("1. (issue 20) cold read >= 0.95x curl, big file and 30 MB",
                   f"{rb / (curl_big / MB):.2f}x / {rm / (curl_mid / MB):.2f}x",
                   rb >= 0.95 * curl_big / MB and rm >= 0.95 * curl_mid / MB)
        cpu = median(res["rcfs"].get("cpu", []))
        for name in (n for n in res if n.startswith("rcfs@")):
            was = median(res[name].get("cpu", []))
            bench.goal(f"1. (issue 20) CPU s/GB of the big read at most half of {name}'s",
                       f"{cpu:.2f} vs {was:.2f} ({cpu / was:.2f}x)", cpu <= was / 2)
    return table(rows, ["system", f"{acct.big_size / MB:.0f} MB: MB/s", "x curl", "x ceiling (same mode)",
                        "x min(curl, ceiling)", "30 MB: MB/s", "x curl", "x ceiling (same mode)",
                        "x min(curl, ceiling)", "big: CPU s/GB of the reader / of the emulator",
                        "seconds per run (big / 30 MB)"])


def io_modes(name: str, acct: Account) -> tuple[str | None, str | None]:
    """The I/O mode a system reads the big and the 200 MiB file in (for the ceiling ratio)."""
    if name == "curl":
        return None, None
    if name == "rcfs" or name.startswith("rcfs@"):  # default --direct-io-above 256M
        return ("direct I/O" if acct.big_size >= 256 << 20 else "page cache"), "page cache"
    if name.startswith("ceiling"):
        return name.removeprefix("ceiling "), name.removeprefix("ceiling ")
    return "page cache", "page cache"  # rclone, httpdirfs, rcfs --direct-io-above off


def case2(bench: Bench, acct: Account, systems: list[System], ceiling: System) -> str:
    """Open + 1-byte read of a voicemail nobody has opened, on loopback and at 30 ms latency."""
    a, b = acct.vm_audio[0], acct.vm_audio[1]
    res: dict[str, dict[str, list[float]]] = {}
    for run in range(bench.args.runs):
        for sysm in [None, *systems, ceiling]:
            name = "curl" if sysm is None else sysm.name
            r = res.setdefault(name, {"0": [], "30": []})
            try:
                if sysm is None:
                    r["0"].append(curl_time(url_of(acct, a), "-r", "0-0"))
                    configure(acct.emu, faults=WAN)
                    r["30"].append(curl_time(url_of(acct, b), "-r", "0-0"))
                    continue
                with sysm.mount(bench, acct.emu, "case2") as m:
                    if sysm is ceiling:
                        os.stat(m.root / "mid.bin")
                        drop_caches()
                        r["0"].append(first_byte_seconds(m.root / "mid.bin"))
                        continue
                    subprocess.run(["ls", "-l", str(m.root / "voicemail")], capture_output=True, check=True,
                                   timeout=300)
                    drop_caches()
                    r["0"].append(first_byte_seconds(m.root / a))
                    configure(acct.emu, faults=WAN)
                    r["30"].append(first_byte_seconds(m.root / b))
            except Exception as exc:
                bench.notes.append(f"case 2, {name}, run {run + 1}: {exc!r}")
            finally:
                configure(acct.emu, faults=LOOPBACK)
    c0, c30 = median(res["curl"]["0"]), median(res["curl"]["30"])
    rows = []
    for name, r in res.items():
        m0, m30 = median(r["0"]), median(r["30"])
        rows.append([name, f"{m0 * 1000:.1f}", f"{m0 / c0:.1f}", f"{m30 * 1000:.1f}" if r["30"] else "",
                     f"{m30 / c30:.1f}" if r["30"] else "", fmt_runs([x * 1000 for x in r["0"] + r["30"]], 1)])
    if res.get("rcfs", {}).get("0"):
        r0, r30 = median(res["rcfs"]["0"]) / c0, median(res["rcfs"]["30"]) / c30
        bench.goal("2. first byte <= 2x curl", f"{r0:.1f}x (loopback), {r30:.1f}x (30 ms)", r0 <= 2 and r30 <= 2)
    return table(rows, ["system", "loopback: ms", "x curl", "30 ms latency: ms", "x curl",
                        "ms per run (loopback..., 30 ms...)"])


def case3(bench: Bench, sizes: list[int], systems: list[System]) -> str:
    """`ls -l` of the faxes folder, cold (fresh mount) and warm (again at once)."""
    rows = []
    for n in sizes:
        with emulator("--scale", "listing", "--faxes", str(n), "--plain-view", "true",
                      "--rate-limits", "false") as emu:
            files = len(plain_links(emu.media + "/plain/faxes/"))
            res: dict[str, dict[str, list]] = {}
            for run in range(bench.args.runs):
                for sysm, extra in systems:
                    label = sysm.name + (" " + " ".join(extra) if extra else "")
                    r = res.setdefault(label, {"cold": [], "warm": [], "rc": [], "rw": [], "routes": []})
                    try:
                        drop_caches()
                        before = requests_by_route(emu)
                        kw = {"extra": extra} if extra else {}
                        with sysm.mount(bench, emu, "ls", **kw) as m:
                            for key, rkey in (("cold", "rc"), ("warm", "rw")):
                                start = requests_by_route(emu)
                                t0 = time.monotonic()
                                out = subprocess.run(["ls", "-l", str(m.root / "faxes")], capture_output=True,
                                                     text=True, timeout=1800)
                                r[key].append(time.monotonic() - t0)
                                assert out.returncode == 0, out.stderr[-500:]
                                shown = len(out.stdout.splitlines()) - 1
                                assert shown == files, f"ls -l showed {shown} of {files} entries"
                                got = diff(requests_by_route(emu), before if key == "cold" else start)
                                r[rkey].append(sum(got.values()))
                                if key == "cold":
                                    r["routes"].append(got)
                    except Exception as exc:
                        bench.notes.append(f"case 3 ({n} faxes), {label}, run {run + 1}: {exc!r}")
            if n == max(sizes) and res.get("rcfs", {}).get("rc"):
                got = median(res["rcfs"]["rc"])
                bench.goal(f"3. ls -l of {files:,} files in <= 11 requests", f"{got:.0f} requests", got <= 11)
            for label, r in res.items():
                routes = r["routes"][0] if r["routes"] else {}
                rows.append([f"{files:,}", label, f"{median(r['cold']):.2f}", f"{median(r['rc']):.0f}",
                             f"{median(r['warm']):.3f}", f"{median(r['rw']):.0f}",
                             ", ".join(f"{k} {v}" for k, v in sorted(routes.items()))])
            bench.notes.append(f"case 3: {n} faxes make {files} files in faxes/ (outbound faxes with a "
                               "cover page show two documents)")
    return table(rows, ["files", "system", "cold s", "cold requests", "warm s", "warm requests",
                        "cold requests by route (auth excluded; rcfs counts from mount start)"])


def case4(bench: Bench, acct: Account, systems: list[System], ceiling: System) -> str:
    """Random 4 KiB O_DIRECT reads over the big recording: latency and requests per read."""
    n = bench.args.random_reads
    res: dict[str, dict[str, list]] = {}
    for run in range(bench.args.runs):
        for sysm in [*systems, ceiling]:
            r = res.setdefault(sysm.name, {"lat": [], "rpr": [], "rpm": []})
            try:
                with sysm.mount(bench, acct.emu, "case4") as m:
                    path = m.root / ("big.bin" if sysm is ceiling else acct.big)
                    os.stat(path)
                    buf = mmap.mmap(-1, 4096)
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
                    rng = random.Random(7 + run)
                    try:
                        os.preadv(fd, [buf], 0)
                        before = requests_by_route(acct.emu)
                        blocks = {0}
                        for _ in range(n):
                            off = rng.randrange(0, acct.big_size // 4096) * 4096
                            blocks.add(off >> 20)
                            t0 = time.perf_counter()
                            os.preadv(fd, [buf], off)
                            r["lat"].append(time.perf_counter() - t0)
                        got = diff(requests_by_route(acct.emu), before)
                    finally:
                        os.close(fd)
                    media = sum(v for k, v in got.items() if k in ("recording-content", "plain-recording"))
                    r["rpr"].append(media / n)
                    r["rpm"].append(media / (len(blocks) - 1))  # block 0 was read before counting
            except Exception as exc:
                bench.notes.append(f"case 4, {sysm.name}, run {run + 1}: {exc!r}")
    rows = [[name, f"{pct(r['lat'], 0.5) * 1000:.2f}", f"{pct(r['lat'], 0.99) * 1000:.2f}",
             f"{median(r['rpr']):.2f}" if sysm_is_remote(name) else "-",
             f"{median(r['rpm']):.2f}" if sysm_is_remote(name) else "-", fmt_runs(r["rpr"])]
            for name, r in res.items()]
    if res.get("rcfs", {}).get("rpm"):
        got = median(res["rcfs"]["rpm"])
        bench.goal("4. random reads: one request per cache miss", f"{got:.2f} requests per new 1 MiB block",
                   abs(got - 1) < 0.05)
    return table(rows, ["system", "p50 ms", "p99 ms", "requests per read", "requests per new 1 MiB block",
                        "requests per read, per run"])


def sysm_is_remote(name: str) -> bool:
    return not name.startswith("ceiling")


def copy_case(bench: Bench, acct: Account, systems: list[System], *, case: str, window: float | None) -> str:
    """`cp -r` of the small files at 30 ms latency; with `window`, under the real budget."""
    folders = sorted({p.split("/")[0] for p in acct.small})
    nfiles = len(acct.small)
    res: dict[str, dict[str, list]] = {}
    floor = None
    limits = UNLIMITED
    if window is not None:
        limits = REAL
        floor = (math.ceil(nfiles / REAL["medium"]) - 1) * window
    timeout = max(120.0, 10 * (floor or 10))
    gave_up: set[str] = set()
    for run in range(bench.args.runs):
        for sysm in [None, *systems]:
            name = "curl" if sysm is None else sysm.name
            r = res.setdefault(name, {"wall": [], "req": [], "429": []})
            if name in gave_up:
                continue
            dest = fresh_dir(bench, "copy-")
            try:
                drop_caches()
                budget(acct.emu, limits, window if window is not None else 60.0)
                configure(acct.emu, faults=WAN)
                stats0 = acct.emu.admin("GET", "/_emulator/stats")
                if sysm is None:
                    urls = [url_of(acct, p) for p in acct.small]
                    argv = ["curl", "-sS", "-f", "--remote-name-all", "--output-dir", str(dest)]
                    if window is not None:
                        argv += ["--rate", f"{int(REAL['medium'] / window * 60 * 0.95)}/m"]
                    bench.record(f"curl (case {case})", argv + ["URL..."], acct.emu)
                    t0 = time.monotonic()
                    subprocess.run(argv + urls, check=True, timeout=timeout, capture_output=True)
                    wall = time.monotonic() - t0
                else:
                    extra = anchor_budget_flags(sysm.name, window) if window is not None else ()
                    kw = {"extra": extra} if extra else {}
                    with sysm.mount(bench, acct.emu, f"case{case}", **kw) as m:
                        t0 = time.monotonic()
                        run_bounded(["cp", "-r", *(str(m.root / f) for f in folders), str(dest)], timeout, m)
                        wall = time.monotonic() - t0
                        bench.note_rss(case, name, m.pid)
                copied = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
                count = sum(1 for f in dest.rglob("*") if f.is_file())
                assert (count, copied) == (nfiles, acct.small_bytes), \
                    f"copied {count} files / {copied} bytes, expected {nfiles} / {acct.small_bytes}"
                stats1 = acct.emu.admin("GET", "/_emulator/stats")
                got = diff({k: v for k, v in stats1["requests"].items() if not k.startswith("admin-")},
                           stats0["requests"])
                r["wall"].append(wall)
                r["req"].append(sum(got.values()))
                r["429"].append(stats1["rate_limited"] - stats0["rate_limited"])
            except subprocess.TimeoutExpired:
                r["wall"].append(float("inf"))
                stats1 = acct.emu.admin("GET", "/_emulator/stats")  # what it had done by then
                r["req"].append(sum(diff({k: v for k, v in stats1["requests"].items() if not k.startswith("admin-")},
                                         stats0["requests"]).values()))
                r["429"].append(stats1["rate_limited"] - stats0["rate_limited"])
                gave_up.add(name)
                bench.notes.append(f"case {case}, {name}, run {run + 1}: not done after {timeout:.0f} s; "
                                   "stopped, and not run again in this case")
            except Exception as exc:
                bench.notes.append(f"case {case}, {name}, run {run + 1}: {exc!r}")
            finally:
                configure(acct.emu, faults=LOOPBACK)
                budget(acct.emu, UNLIMITED, 60.0)
                shutil.rmtree(dest, ignore_errors=True)
    best_anchor = min((median(r["wall"]) for n, r in res.items() if n != "curl" and not n.startswith("rcfs")),
                      default=float("nan"))
    if res.get("rcfs", {}).get("wall"):
        w = median(res["rcfs"]["wall"])
        if window is None:
            bench.goal("5. cp -r at 30 ms >= 2x faster than the best anchor", f"{best_anchor / w:.2f}x",
                       best_anchor / w >= 2)
        else:
            hit = [f"{n} {median(r['429']):.0f}" for n, r in res.items() if n not in ("rcfs", "curl") and r["429"]]
            bench.goal("6. under the budget within 1.1x of the floor, zero 429s",
                       f"{w / floor:.2f}x, {median(res['rcfs']['429']):.0f} x 429 (anchors: {', '.join(hit)})",
                       w / floor <= 1.1 and median(res["rcfs"]["429"]) == 0)
    rows = []
    for name, r in res.items():
        w = median(r["wall"])
        row = [name, f"{w:.2f}" if w != float("inf") else f"> {timeout:.0f}", f"{median(r['req']):.0f}",
               f"{best_anchor / w:.2f}" if name == "rcfs" else ""]
        if window is not None:
            row += [f"{w / floor:.2f}" if floor else "", f"{median(r['429']):.0f}"]
        row.append(fmt_runs(r["wall"]))
        rows.append(row)
    header = ["system", "wall s", "requests", "best anchor / rcfs"]
    if window is not None:
        header += [f"x floor ({floor:.0f} s)", "429s"]
    header.append("seconds per run")
    return table(rows, header)


def anchor_budget_flags(name: str, window: float) -> tuple[str, ...]:
    """What each anchor's documentation offers against a request budget."""
    per_second = REAL["medium"] / window
    if name.startswith("rclone"):
        # --tpslimit caps HTTP transactions per second; a little under the budget.
        return ("--tpslimit", f"{per_second * 0.95:.2f}", "--tpslimit-burst", "1")
    if name.startswith("httpdirfs"):
        # httpdirfs has no rate limiter; its one knob is the wait before retrying a 429.
        return ("--retry-wait", str(max(1, math.ceil(window))))
    return ()


def rss_table(bench: Bench) -> str:
    names = sorted({s for _, s in bench.rss}, key=lambda s: (s != "rcfs", s))
    rows = [[n, *(f"{bench.rss[(c, n)]:.0f}" if (c, n) in bench.rss else "" for c in ("1", "5"))] for n in names]
    return table(rows, ["system", "case 1 peak RSS MiB", "case 5 peak RSS MiB"])


# ------------------------------------------------------------------------------ main
def versions() -> list[str]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    def pkg(name: str) -> str:
        return first(["dpkg-query", "-W", "-f", "${Version}\n", name])

    import pyfuse3
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 1024 / 1024
    return [f"machine: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, kernel {platform.release()}, "
            f"{first(['sh', '-c', '. /etc/os-release; echo $PRETTY_NAME'])}; shared with other jobs while running",
            f"rcfs: git {first(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'])}, Python {platform.python_version()}, "
            f"pyfuse3 {pyfuse3.__version__}, libfuse3 {pkg('libfuse3-3')}",
            f"rclone {pkg('rclone')}; httpdirfs {pkg('httpdirfs')} (libfuse {pkg('libfuse2')}); "
            f"curl {first(['curl', '--version']).split()[1]}"]


def ensure_tools() -> None:
    missing = [p for p, exe in (("rclone", "rclone"), ("httpdirfs", "httpdirfs")) if shutil.which(exe) is None]
    if missing:
        print(f"== apt-get install {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, timeout=900,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 1 run (200 MiB instead of 1 GiB, 100/1000 files, voicemail only)")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--random-reads", type=int)
    parser.add_argument("--window", type=float, help="rate-limit window for case 6 (real: 60 s)")
    parser.add_argument("--cases", default="1,2,3,4,5,6", help="comma-separated subset of 1-6 (7 comes with 1 and 5)")
    parser.add_argument("--systems", help="comma-separated name prefixes of the systems to run besides curl and rcfs "
                        "(e.g. 'rcfs@,ceiling' for a short try of case 1); default: all")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare-with", type=Path, metavar="DIR", action="append", default=[],
                        help="also run the rcfs of this checkout (e.g. `git worktree add --detach DIR main`) "
                             "in cases 1, 2, 4, 5 and 6, named rcfs@<its commit>: before and after in one run "
                             "(may be given more than once)")
    args = parser.parse_args()
    q = args.quick
    args.runs = args.runs or (1 if q else 3)
    args.random_reads = args.random_reads or (20 if q else 200)
    args.window = args.window or (1.0 if q else 3.0)
    args.out = args.out or (Path(tempfile.gettempdir()) / "rcfs-anchors-quick.md" if q
                            else ROOT / "bench-results" / "anchors.md")
    cases = {c.strip() for c in args.cases.split(",")}
    if os.geteuid() != 0:
        raise SystemExit("scripts/bench --anchors needs root (FUSE mounts, drop_caches, apt-get)")
    ensure_tools()

    bench = Bench(args)
    sections: list[str] = []
    started = time.monotonic()
    rcfs, rcfs_paged = rcfs_system(), rcfs_system("rcfs --direct-io-above off", "--direct-io-above", "off")
    rclone_off, rclone_full, httpdirfs = rclone_system("off"), rclone_system("full"), httpdirfs_system()
    anchors = [rclone_off, rclone_full, httpdirfs]
    before: list[System] = []
    for checkout in args.compare_with:
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        before.append(rcfs_system(f"rcfs@{commit}", checkout=checkout.resolve()))
    if args.systems:
        prefixes = [p.strip() for p in args.systems.split(",") if p.strip()]
        wanted = lambda sysm: any(sysm.name.startswith(p) for p in prefixes)  # noqa: E731
        rcfs_paged = rcfs_paged if wanted(rcfs_paged) else None
        anchors, before = [a for a in anchors if wanted(a)], [b for b in before if wanted(b)]
    else:
        wanted = lambda sysm: True  # noqa: E731
    try:
        with emulator("--scale", "bench", "--faxes", "110", "--plain-view", "true",
                      *(x for g, n in UNLIMITED.items() for x in (f"--limit-{g}", str(n)))) as emu:
            acct = describe_account(emu, q)
            files = {"big.bin": acct.big_size, "mid.bin": acct.mid_size}
            all_ceilings = [ceiling_system(False, files), ceiling_system(True, files)]
            ceilings = [c for c in all_ceilings if wanted(c)]
            print(f"== account: big {acct.big} ({acct.big_size} B), {len(acct.small)} small files "
                  f"({acct.small_bytes} B)", flush=True)
            if "1" in cases:
                print("== case 1", flush=True)
                sections.append("### 1. Cold sequential read\n\n" + case1(bench, acct, [rcfs, *before, *filter(None, [rcfs_paged]), *anchors], ceilings))
            if "2" in cases:
                print("== case 2", flush=True)
                sections.append("### 2. Time to first byte\n\n" + case2(bench, acct, [rcfs, *before, *anchors], all_ceilings[0]))
            if "4" in cases:
                print("== case 4", flush=True)
                sections.append("### 4. Random 4 KiB reads\n\n" + case4(bench, acct, [rcfs, *before, *anchors], all_ceilings[1]))
            if "5" in cases:
                print("== case 5", flush=True)
                sections.append("### 5. cp -r of the small files, 30 ms per request\n\n"
                                + copy_case(bench, acct, [rcfs, *before, *anchors], case="5", window=None))
            if "6" in cases:
                print("== case 6", flush=True)
                sections.append(f"### 6. The same under the real budget, window {args.window:g} s\n\n"
                                + copy_case(bench, acct, [rcfs, *before, *anchors], case="6", window=args.window))
        if "3" in cases:
            print("== case 3", flush=True)
            ls_systems = [(rcfs, ()), (rclone_off, ()), (rclone_off, ("--http-no-head",)), (rclone_full, ()),
                          (httpdirfs, ())]
            sections.append("### 3. ls -l\n\n" + case3(bench, [100, 1000] if q else [1000, 10000], ls_systems))
        sections.append("### 7. Peak RSS of the filesystem process\n\n" + rss_table(bench))
    except BaseException:
        bench.notes.append("aborted: " + traceback.format_exc(limit=3))
        raise
    finally:
        bench.cleanup()
        write(args, bench, sections, time.monotonic() - started, acct if "acct" in locals() else None)


def write(args, bench: Bench, sections: list[str], elapsed: float, acct: Account | None) -> None:
    lines = [f"# rcfs and the anchors, side by side ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"`scripts/bench --anchors{' --quick' if args.quick else ''}` (scripts/benchlib/anchors.py), "
             f"{args.runs} run(s) per system, medians; {elapsed / 60:.0f} minutes.", ""]
    lines += [f"- {v}" for v in versions()]
    if acct is not None:
        lines += [f"- files: the {acct.big_size / MB:.0f} MB recording `{acct.big}`; the first 30 MB of the "
                  f"{acct.mid_size / MB:.0f} MB recording `{acct.mid}` (the seed has no 30 MB recording); "
                  f"{len(acct.small)} small files in {', '.join(sorted({p.split('/')[0] for p in acct.small}))} "
                  f"({acct.small_bytes / MB:.1f} MB, 69 B - 1.5 MB) for cases 5 and 6"]
    if bench.goals:
        lines += ["", "### Goals of issues 11 and 20 for rcfs", "", table(bench.goals, ["goal", "measured", "met"])]
    lines += ["", *sum(([s, ""] for s in sections), [])]
    lines += ["### Commands", "", "Emulator: `python -m rcfs.emulator --scale bench --faxes 110 --plain-view true` "
              "(limits raised except in case 6; latency and budget set through `POST /_emulator/config`); "
              "case 3: `--scale listing --faxes N --plain-view true --rate-limits false`. "
              "Before every cold measurement: `sync; echo 3 > /proc/sys/vm/drop_caches`.", ""]
    lines += [f"- {label}: `{cmd}`" for label, cmd in bench.commands.items()]
    if bench.notes:
        lines += ["", "### Notes and failures", ""] + [f"- {n}" for n in bench.notes]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
