"""What production does sometimes, seen through a real mount with real tools (issue 9):
a link failing a third of the time, media without a size, a missing permission, an
ended session, rate-limited groups, attachment URIs on a foreign host."""

from __future__ import annotations

import errno
import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from conftest import build_config
from accounthelp import account_files, emulator_media
from fusehelp import fuse_required, mount_log, mounted
from rcfs.emulator import seed

pytestmark = fuse_required


def _args(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _media_files(root: Path) -> list[Path]:
    # (SMS/MMS text bodies are files of the message text, not of a media object)
    return [p for p in account_files(root) if not ("/mms/" in str(p) and p.suffix == ".txt")]


def _copied(copy: Path, rel: Path) -> Path:
    """The copy of mount path `rel`; a recording's extension may have changed once its
    download told the real type, so the same stem counts."""
    exact = copy / rel
    if exact.exists():
        return exact
    same = [p for p in (copy / rel.parent).iterdir() if p.stem == rel.stem]
    assert len(same) == 1, (rel, same)
    return same[0]


def _check_copy(store, mnt: Path, copy: Path) -> int:
    files = _media_files(mnt)
    assert files
    for path in files:
        media = emulator_media(store, path)
        got = _copied(copy, path.relative_to(mnt)).read_bytes()
        assert len(got) == media.size and _sha(got) == _sha(media.read(0, media.size)), path
    return len(files)


def test_cp_r_of_the_whole_account_over_a_link_failing_a_third_of_the_time(start_emulator, tmp_path):
    options = dict(window=1.0, limit_medium=1000, limit_heavy=1000, max_bytes_per_response=64 * 1024,
                   faults={"reset_rate": 0.15, "truncate_rate": 0.15, "error_rate": 0.06, "seed": 11})
    srv = start_emulator(**options)
    store = seed.build_store(build_config(**options))
    mnt = tmp_path / "m"
    # --no-company: the signed-in user's own account; /company is copied in test_mount_company.
    with mounted(mnt, state_dir=tmp_path / "s", extra_args=["--no-company"], **_args(srv)):
        subprocess.run(["cp", "-r", str(mnt), str(tmp_path / "copy")], check=True, timeout=600)
        n = _check_copy(store, mnt, tmp_path / "copy")
        stats = srv.stats()
    faults = stats["faults"]
    media = stats["requests"].get("message-content", 0) + stats["requests"].get("recording-content", 0)
    assert sum(faults.values()) > media / 4, (faults, media)
    assert n > 100


@pytest.mark.parametrize("mode", [
    dict(chunked_media=True, unknown_media_total=True),
    dict(chunked_media=True, ignore_range=True),
], ids=["chunked-total-star", "chunked-200-to-range"])
def test_files_whose_size_the_server_never_says_copy_exactly(start_emulator, tmp_path, mode):
    options = dict(window=1.0, limit_medium=1000, limit_heavy=1000, hide_sizes=1.0, **mode)
    srv = start_emulator(**options)
    store = seed.build_store(build_config(**options))
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
        (tmp_path / "copy").mkdir()
        for folder in ("faxes", "voicemail", "recordings"):
            subprocess.run(["cp", "-r", str(mnt / folder), str(tmp_path / "copy" / folder)], check=True,
                           timeout=300)
        for folder in ("faxes", "voicemail", "recordings"):
            for path in sorted((mnt / folder).iterdir()):
                media = emulator_media(store, path)
                got = _copied(tmp_path / "copy", Path(folder) / path.name).read_bytes()
                assert len(got) == media.size > 0, path  # never an empty file
                assert _sha(got) == _sha(media.read(0, media.size)), path


def test_missing_permission_is_eacces_and_the_log_names_it(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, missing_permissions=("ReadCallRecording",))
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
        recs = sorted((mnt / "recordings").iterdir())
        assert recs  # listing needs ReadCallLog, which the app has
        with pytest.raises(OSError) as info:
            recs[0].read_bytes()
        assert info.value.errno == errno.EACCES
        fax = sorted((mnt / "faxes").iterdir())[0]
        assert len(fax.read_bytes()) > 0  # ReadMessages is there: the mount goes on
        time.sleep(0.2)
        log = mount_log(mnt)
    assert "ReadCallRecording" in log and "permission" in log


def test_a_session_ended_by_the_server_is_invisible_to_a_reader(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
        files = sorted((mnt / "voicemail").iterdir())
        assert srv.admin("POST", "/_emulator/sessions/end", {"which": "all"})["ended"] == 1
        srv.reset_stats()
        assert len(files[0].read_bytes()) > 0
        assert srv.stats()["requests"]["oauth-token"] == 2  # the refused refresh, one JWT grant
        time.sleep(0.2)
        assert "logging in again" in mount_log(mnt)


def test_a_blocking_cp_waits_out_a_rate_limited_group(start_emulator, tmp_path):
    options = dict(window=1.0)
    srv = start_emulator(**options)
    store = seed.build_store(build_config(**options))
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
        rec = sorted((mnt / "recordings").iterdir())[0]
        srv.configure(faults={"force_429": 8})  # beyond one call's three 429s
        subprocess.run(["cp", str(rec), str(tmp_path / "rec")], check=True, timeout=120)  # not EAGAIN
        media = emulator_media(store, rec)
        assert _sha((tmp_path / "rec").read_bytes()) == _sha(media.read(0, media.size))
        assert srv.stats()["rate_limited"] >= 4


def test_attachment_uris_on_a_foreign_host_are_eio_and_get_no_token(start_emulator, tmp_path):
    import socket
    import threading

    hits: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    hits.append(conn.recv(65536))
                except OSError:
                    hits.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        srv = start_emulator(window=1.0, foreign_media_rate=0.5, foreign_media_base=f"http://localhost:{port}")
        mnt = tmp_path / "m"
        with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
            refused = ok = 0
            for path in sorted((mnt / "faxes").iterdir()):
                try:
                    path.read_bytes()
                    ok += 1
                except OSError as exc:
                    assert exc.errno == errno.EIO, path
                    refused += 1
            time.sleep(0.2)
            log = mount_log(mnt)
        assert refused and ok
        assert "refusing to send the access token" in log and "localhost" in log
        assert hits == []  # not a connection, let alone a token
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def test_a_read_that_cannot_progress_is_eio_within_the_documented_bound(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, limit_medium=1000, limit_heavy=1000)
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **_args(srv)):
        rec = sorted((mnt / "recordings").iterdir())[0]
        fax = sorted((mnt / "faxes").iterdir())[0]
        srv.configure(faults={"reset_rate": 1.0, "cut_at": 0.0})  # not a byte gets through
        for path in (rec, fax):  # a stream and a ranged fetch
            t0 = time.monotonic()
            with pytest.raises(OSError) as info:
                path.read_bytes()
            # rcfs.reader: a download gives up after progress_timeout (60 s) without a new
            # byte, and a read never waits more than read_timeout (90 s) past the last one
            assert info.value.errno == errno.EIO
            assert time.monotonic() - t0 < 90, path
