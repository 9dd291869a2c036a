"""The demo account as a desktop sees it: GLib's content type of every file (what picks
the icon and the program a double-click opens) must be the type of its bytes, right after
mounting and once the background work has learned what the listings left out.

`gio info` is GLib's own answer (Nautilus asks the same library); `file --mime-type`
reads the bytes. Sizes the API did not give are shown provisionally (non-zero: GLib
types every empty file application/x-zerosize) and learned in the background from
rate-limit budget nobody uses; this test also checks that such work never delays a
foreground `cp` running meanwhile and never trips a 429.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_config
from accounthelp import account_files, expected_bytes
from fusehelp import fuse_required, mounted
from rcfs import status
from rcfs.emulator import seed

pytestmark = [
    fuse_required,
    pytest.mark.skipif(not (shutil.which("gio") and shutil.which("file")),
                       reason="needs gio (apt-get install libglib2.0-bin) and file"),
]

EMU = dict(window=2.0)  # the demo account; its rate-limit window scaled down from 60 s
# Where GLib's shared-mime-info and libmagic spell one type differently.
SAME_TYPE = {"audio/wav": "audio/x-wav", "text/x-vcard": "text/vcard", "image/x-tiff": "image/tiff"}


def canonical(mime: str) -> str:
    return SAME_TYPE.get(mime, mime)


def args_for(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def media_files(root: Path) -> list[Path]:
    # /greetings too: the background learner probes the greetings the rules play (issue 20).
    return account_files(root)


def gio_info(paths: list[Path]) -> dict[str, tuple[str, int]]:
    """{path: (content type, size)} as GLib reports them, one `gio info` for all."""
    out = subprocess.run(["gio", "info", "-a", "standard::content-type,standard::size", *map(str, paths)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    info: dict[str, tuple[str, int]] = {}
    path = ctype = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("local path:"):
            path = line.split(":", 1)[1].strip()
        elif line.startswith("standard::content-type:"):
            ctype = line.split(":", 3)[-1].strip()
        elif line.startswith("standard::size:") and path is not None:
            info[path] = (ctype or "", int(line.rsplit(":", 1)[1]))
            path = ctype = None
    assert len(info) == len(paths), (len(info), len(paths))
    return info


def byte_types(paths: list[Path]) -> dict[str, str]:
    out = subprocess.run(["file", "--mime-type", "-b", *map(str, paths)], capture_output=True, text=True,
                         check=True, timeout=300).stdout.splitlines()
    return {str(p): t.strip() for p, t in zip(paths, out)}


def _content_path(path: Path) -> str:
    """The end of the emulator path of a message file's content (as the media log has it)."""
    msg, att = os.getxattr(path, "user.rc.id").decode(), os.getxattr(path, "user.rc.attachment_id").decode()
    return f"/message-store/{msg}/content/{att}"


def wait_for(predicate, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_desktop_types_every_demo_file_by_its_bytes_and_background_work_never_delays_a_cp(start_emulator, tmp_path):
    srv = start_emulator(**EMU)
    store = seed.build_store(build_config(**EMU))
    mp, state = tmp_path / "rc", tmp_path / "state"
    with mounted(mp, state_dir=state, background=True, **args_for(srv)):
        files = media_files(mp)
        srv.reset_stats()
        first = gio_info(files)
        # Right after mounting: nothing is typed as an empty file, and listing + typing
        # cost no content request (GLib goes by the name when the size is not zero).
        assert srv.stats()["requests"].get("message-content", 0) == 0
        assert not [p for p, (t, size) in first.items() if t == "application/x-zerosize" or size == 0]
        report = status.read(str(mp))
        pending = report["background"]["pending"]
        assert pending["sizes"] > 0 and pending["types"] > 0, pending  # the account has unknowns
        pending_files = len([p for p in files if not os.path.exists(p) or "user.rc.size" not in os.listxattr(p)])
        mounted_at = time.monotonic()
        # A foreground cp while the background work runs.
        wait_for(lambda: status.read(str(mp))["background"]["requests"] > 0, "the background work to start")
        known = [p for p in sorted((mp / "faxes").iterdir()) if "user.rc.size" in os.listxattr(p)][-5:]
        paths = {_content_path(p) for p in known}
        before = status.read(str(mp))
        srv.reset_stats()  # from here the emulator logs each content request in arrival order
        dest = tmp_path / "copy"
        dest.mkdir()
        subprocess.run(["cp", *map(str, known), str(dest)], check=True, timeout=120)
        log = srv.stats()["media_requests"]
        after = status.read(str(mp))
        for path in known:
            assert (dest / path.name).read_bytes() == expected_bytes(store, path), path
        medium_before, medium_after = before["groups"]["medium"], after["groups"]["medium"]
        bg_during = medium_after["background"] - medium_before["background"]  # (for the print)
        # The cp found room at once: the background work leaves half the window free.
        assert medium_before["free"] >= len(known) + 1 and medium_before["waiting"] == 0, medium_before
        # Each copied file cost exactly one content request (its size is known: one
        # ranged GET), whenever the background probes landed. (Probes are 1-byte GETs;
        # the cp's reads may also have prefetched a few files it did not copy.)
        reads = [(i, path[path.find("/message-store/"):]) for i, (route, path, rng) in enumerate(log)
                 if rng != "bytes=0-0"]
        assert sorted(path for _, path in reads if path in paths) == sorted(paths), log
        # The background work yields to the cp: once the cp's first request arrived, no
        # new probe of its group (Medium: message content) starts while the cp goes on;
        # only the one already out may land then. (Recordings, Heavy, go on meanwhile.)
        cp_reads = [i for i, path in reads if path in paths]
        probes_amid = [log[i] for i in range(cp_reads[0], cp_reads[-1])
                       if log[i][0] == "message-content" and log[i][2] == "bytes=0-0"]
        assert len(probes_amid) <= 1, log
        # Once the background work is done, every file has its real size and type.
        done = wait_for(lambda: (r := status.read(str(mp)))["background"]["pending"] == {"sizes": 0, "types": 0}
                        and r, "the background work to finish")
        files = media_files(mp)  # recordings may have been renamed by their learned type
        second = gio_info(files)
        by_bytes = byte_types(files)
        wrong = {p: (second[str(p)][0], by_bytes[str(p)]) for p in files
                 if canonical(second[str(p)][0]) != canonical(by_bytes[str(p)])}
        assert not wrong, wrong
        wrong_size = {p: second[str(p)][1] for p in files
                      if second[str(p)][1] != len(expected_bytes(store, p))}
        assert not wrong_size, wrong_size
        learned_in = time.monotonic() - mounted_at
        bg = done["background"]
        mismatched_first = sum(1 for p in files if not os.path.exists(str(p)) or str(p) not in first
                               or canonical(first[str(p)][0]) != canonical(by_bytes[str(p)]))
        print(f"\nbackground work done {learned_in:.0f} s after the first listing ({EMU['window']:g} s windows); "
              f"{len(files)} files; right after mounting {mismatched_first} typed otherwise than their bytes "
              f"(recordings not yet probed); background: {bg['requests']} requests for {bg['sizes_learned']} "
              f"sizes and {bg['types_learned']} types, per group {[(g, v['background']) for g, v in done['groups'].items()]}; "
              f"{bg_during} during the cp of {len(known)} faxes")
        # One probe per file at most, nothing rate-limited anywhere.
        assert bg["requests"] <= pending_files + bg["failures"], bg
        assert bg["rate_limited"] == 0 and done["rate_limited"] == 0
    assert srv.stats()["rate_limited"] == 0
    # Learned once per account: a remount has nothing left to learn and asks nothing.
    srv.reset_stats()
    with mounted(tmp_path / "again", state_dir=state, background=True, **args_for(srv)):
        files = media_files(tmp_path / "again")
        report = status.read(str(tmp_path / "again"))
        assert report["background"]["pending"] == {"sizes": 0, "types": 0}
        assert not [p for p in files if "user.rc.size" not in os.listxattr(p)]
    assert srv.stats()["requests"].get("message-content", 0) == 0
    assert srv.stats()["requests"].get("recording-content", 0) == 0


def test_status_reports_a_download_in_flight_cache_use_and_the_outbox(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "rc"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)):
        rec = max((mp / "recordings").iterdir(), key=lambda p: p.stat().st_size)
        with open(rec, "rb") as fh:
            fh.read(1 << 20)
            report = status.read(str(mp))
            key = "rec:" + os.getxattr(rec, "user.rc.id").decode()  # (its name may change: type learned)
            flying = [d for d in report["downloads"] if d["key"] == key]
            assert flying and flying[0]["size"] == os.fstat(fh.fileno()).st_size and flying[0]["open"] == 1
        rec = next(p for p in (mp / "recordings").iterdir() if os.getxattr(p, "user.rc.id").decode() == key[4:])
        sha = hashlib.sha256(rec.read_bytes()).hexdigest()
        assert hashlib.sha256(rec.read_bytes()).hexdigest() == sha  # second read: from the block cache
        report = status.read(str(mp))
        cache = report["cache"]
        assert cache["hits"] > 0 and 0 < cache["bytes"] <= cache["limit"] and 0 < cache["hit_rate"] <= 1
        assert report["bytes_fetched"] >= rec.stat().st_size
        heavy = report["groups"]["heavy"]
        assert heavy["requests"] >= 1 and heavy["background"] == 0 and heavy["limit"] > 0
        assert report["outbox"] == {"waiting": 0, "sending": 0, "failed": 0, "held": 0, "sent": 0}
        out = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mp)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        assert "heavy" in out and "block cache" in out and "outbox" in out
    result = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mp)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not a running rcfs mount" in result.stderr


def test_tools_that_trust_st_size_get_every_byte_of_files_shown_with_a_provisional_size(start_emulator, tmp_path):
    """tar, cp, rsync and sha256sum over files whose size nobody has learned yet (no
    attachment carries `size`, no background work): each opens the file, which learns
    the exact size before the first byte is read, so every byte arrives and tar sees no
    file change."""
    options = dict(window=1.0, hide_sizes=1.0)
    srv = start_emulator(**options)
    store = seed.build_store(build_config(**options))
    mp = tmp_path / "rc"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)):
        faxes = sorted((mp / "faxes").iterdir())[:12]
        assert all(p.stat().st_size == 4096 for p in faxes)  # provisional
        expected = {p.name: expected_bytes(store, p) for p in faxes}
        assert any(len(b) > 4096 for b in expected.values()) and any(len(b) < 4096 for b in expected.values())
        tar = subprocess.run(["tar", "-cf", str(tmp_path / "a.tar"), "-C", str(mp / "faxes"), *[p.name for p in faxes[:6]]],
                             capture_output=True, text=True, timeout=120)
        assert tar.returncode == 0 and tar.stderr == "", tar.stderr
        (tmp_path / "untar").mkdir()
        subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(tmp_path / "untar")], check=True)
        (tmp_path / "cp").mkdir()
        subprocess.run(["cp", *map(str, faxes[6:9]), str(tmp_path / "cp")], check=True, timeout=120)
        (tmp_path / "rsync").mkdir()
        subprocess.run(["rsync", "-a", *map(str, faxes[9:]), str(tmp_path / "rsync")], check=True, timeout=120)
        for p in faxes[:6]:
            assert (tmp_path / "untar" / p.name).read_bytes() == expected[p.name], p
        for p in faxes[6:9]:
            assert (tmp_path / "cp" / p.name).read_bytes() == expected[p.name], p
        for p in faxes[9:]:
            assert (tmp_path / "rsync" / p.name).read_bytes() == expected[p.name], p
        sums = subprocess.run(["sha256sum", *map(str, faxes)], capture_output=True, text=True, check=True).stdout
        got = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in sums.splitlines()}
        assert all(got[str(p)] == hashlib.sha256(expected[p.name]).hexdigest() for p in faxes)
        assert all(p.stat().st_size == len(expected[p.name]) for p in faxes)  # exact once opened
    assert srv.stats()["rate_limited"] == 0
