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

`scripts/bench --listing --ls-l [--faxes 10000] [--runs 7] [--new-ls DIR]` runs instead
the warm `ls -l` case of issue 20: `ls -l` of the faxes folder through rcfs, side by side
(alternating, in one run) with `ls -l` of a tmpfs folder holding the same names, sizes and
times, with this machine's coreutils and with a coreutils >= 9.4 (which lists every file's
xattrs instead of asking for two by name). Debian 12 has 9.1; the newer one is Debian 13's
coreutils package, unpacked with its own C library into DIR (`--new-ls DIR`, fetched
with `apt-get download` from Debian 13's archive through a private apt configuration
when DIR is empty: nothing of the system's apt setup changes) and run through its own
dynamic loader under the name `ls` (rcfs tells `ls` apart by its process name, as it
would be for /usr/bin/ls). Also counts the xattr system calls each `ls -l` made (strace,
in a separate untimed run). Writes bench-results/listing-ls-l.md.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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


# -- warm `ls -l` against tmpfs (issue 20 item 1) ---------------------------------------------

NEW_COREUTILS = ("coreutils", "libc6", "libselinux1", "libacl1", "libattr1", "libpcre2-8-0", "libgmp10",
                 "libcap2", "libssl3t64", "libsystemd0", "libzstd1", "liblzma5", "liblz4-1", "libgcrypt20",
                 "libgpg-error0", "zlib1g")
NEW_SUITE = "trixie"  # Debian 13: coreutils 9.7


def fetch_new_coreutils(dest: Path) -> None:
    """Unpack Debian 13's coreutils and the libraries it loads into `dest`, with a private
    apt configuration (its own lists and cache under `dest`), leaving the system's alone."""
    apt = dest / "apt"
    for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "lists/partial", "cache/archives/partial",
                "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "etc" / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {NEW_SUITE} main\n")
    opts = ["-o", f"Dir::Etc={apt / 'etc'}", "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::Cache={apt / 'cache'}", "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=True, timeout=600)
    subprocess.run(["apt-get", *opts, "download", *NEW_COREUTILS], check=True, timeout=600, cwd=apt / "debs",
                   capture_output=True)
    for deb in sorted((apt / "debs").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest / "root")], check=True, timeout=120)


def new_ls_command(dest: Path) -> list[str]:
    """argv prefix running the unpacked `ls` as a process named `ls`."""
    root = dest / "root"
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    loader = libdir / "ld-linux-x86-64.so.2"
    if not loader.exists():
        fetch_new_coreutils(dest)
    named = dest / "bin" / "ls"  # the loader under the name `ls`: /proc/PID/comm is "ls"
    named.parent.mkdir(exist_ok=True)
    if not named.exists():
        named.symlink_to(loader)
    return [str(named), "--library-path", str(libdir), str(root / "usr" / "bin" / "ls")]


def _ls_version(cmd: list[str]) -> str:
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    return out.splitlines()[0].split()[-1]


def _xattr_syscalls(cmd: list[str], path: Path) -> int:
    with tempfile.NamedTemporaryFile(prefix="rcfs-bench-strace-") as trace:
        subprocess.run(["strace", "-f", "-qq", "-o", trace.name, "-e",
                        "trace=getxattr,lgetxattr,fgetxattr,listxattr,llistxattr,flistxattr",
                        *cmd, "-l", str(path)], check=True, capture_output=True, timeout=1800)
        return sum(1 for line in Path(trace.name).read_text().splitlines() if "xattr(" in line)


def _ls_seconds(cmd: list[str], path: Path) -> float:
    """Wall time of one `ls -l`, waited for by a blocking waitpid. (subprocess.run with a
    timeout and no pipes waits by polling, sleeping up to 50 ms between polls: an `ls`
    of 65 ms was timed as 114 ms, and the earlier tables carry that step.) A timer kills
    it after 30 minutes, so the wait is bounded all the same."""
    proc = subprocess.Popen([*cmd, "-l", str(path)], stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    killer = threading.Timer(1800, proc.kill)
    killer.start()
    try:
        returncode = proc.wait()
    finally:
        killer.cancel()
    elapsed = time.monotonic() - t0
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, proc.args)
    return elapsed


def ls_l_rows(faxes: int, runs: int, window: float, new_ls: Path | None) -> list[list[str]]:
    """Warm `ls -l` through rcfs against tmpfs, per coreutils."""
    variants = [("ls", ["ls"])]
    if new_ls is not None:
        variants.append(("ls", new_ls_command(new_ls)))
    rows: list[list[str]] = []
    with emulator("--scale", "listing", "--faxes", str(faxes), "--window", str(window)) as emu:
        # --listing-ttl: every timed `ls -l` is answered from memory (no ISync in between)
        with mount(emu, "--listing-wait", "1800", "--listing-ttl", "86400") as (mp, _proc):
            folder = mp / "faxes"
            names = os.listdir(folder)  # the first listing; every `ls -l` below is warm
            local = Path(tempfile.mkdtemp(prefix="rcfs-bench-ls-", dir="/dev/shm"))
            try:
                for name in names:  # same names, sizes and times on tmpfs
                    st = os.stat(folder / name)
                    with open(local / name, "wb") as fh:
                        fh.truncate(st.st_size)
                    os.utime(local / name, ns=(st.st_atime_ns, st.st_mtime_ns))
                for _, cmd in variants:
                    version = _ls_version(cmd)
                    _ls_seconds(cmd, folder), _ls_seconds(cmd, local)  # warm both
                    times: dict[str, list[float]] = {"rcfs": [], "tmpfs": []}
                    for _ in range(runs):  # alternating, so both see the same machine load
                        times["rcfs"].append(_ls_seconds(cmd, folder))
                        times["tmpfs"].append(_ls_seconds(cmd, local))
                    calls = _xattr_syscalls(cmd, folder)
                    rc, tm = statistics.median(times["rcfs"]), statistics.median(times["tmpfs"])
                    rows.append([f"{len(names):,} files, coreutils {version}", f"{rc:.3f} s", f"{tm:.3f} s",
                                 f"{rc / tm:.2f}x", str(calls),
                                 " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(times["rcfs"], times["tmpfs"]))])
            finally:
                shutil.rmtree(local, ignore_errors=True)
    return rows


def main_ls_l(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ls-l", action="store_true")
    parser.add_argument("--faxes", type=int, default=10000, help="faxes in the account (10000: 13,066 files)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each, alternating (default 7)")
    parser.add_argument("--window", type=float, default=1.0, help="emulator rate-limit window in s")
    parser.add_argument("--new-ls", type=Path, help="directory for Debian 13's coreutils (fetched when empty)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "listing-ls-l.md")
    args = parser.parse_args(argv)
    rows = ls_l_rows(args.faxes, args.runs, args.window, args.new_ls)
    text = table(rows, ["warm `ls -l` of /faxes", "rcfs (median)", "tmpfs, same names (median)", "rcfs / tmpfs",
                        "xattr syscalls of one `ls -l` on rcfs", "runs rcfs/tmpfs (s)"])
    header = (f"rcfs warm `ls -l` against tmpfs, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} cores, emulator on loopback, runs alternating in one process "
              f"(`scripts/bench --listing --ls-l`)\n\n")
    print(header + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + text + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--ls-l" in argv:
        return main_ls_l(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="fax counts, comma-separated (default: 10000,100000)")
    parser.add_argument("--window", type=float, default=1.0, help="emulator rate-limit window in s (real: 60)")
    parser.add_argument("--ttl", type=float, default=TTL, help="rcfs --listing-ttl for the run (default: 30)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "listing.md")
    parser.add_argument("--ls-l", action="store_true", help="the warm `ls -l` against tmpfs case instead (see above)")
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
