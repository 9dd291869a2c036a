"""Mount behaviours that need their own emulator or mount: sizes the API does not give,
10,000 faxes, token expiry and revocation, hostile names, CLI errors, umount, stale mounts."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_config
from fusehelp import FUSERMOUNT, force_unmount, fuse_required, mount_log, mounted
from rcfs.emulator import seed
from rcfs.folders.media import PROVISIONAL_SIZE

pytestmark = fuse_required


def args_for(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def rcfs(*argv: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rcfs", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_unknown_sizes_cost_nothing_to_list_are_exact_once_opened_and_remembered(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, hide_sizes=1.0)  # no attachment carries `size`
    state = tmp_path / "state"
    # (mounted() runs without the background learner, tested in test_desktop.py): this is
    # the foreground path alone, the size is learned by opening the file.
    with mounted(tmp_path / "a", state_dir=state, **args_for(srv)):
        faxes = sorted((tmp_path / "a" / "faxes").iterdir())
        srv.reset_stats()
        # ls -l: no request per file; a provisional non-zero size (so desktops type the
        # file by its name, not as an empty file)
        assert all(p.stat().st_size == PROVISIONAL_SIZE for p in faxes)
        assert srv.stats()["requests"].get("message-content", 0) == 0
        data = faxes[0].read_bytes()
        assert len(data) > 0 and faxes[0].stat().st_size == len(data)
        # Every later listing carries the learned size too: `ls -l` (READDIRPLUS hands the
        # kernel each entry's attributes, which rcfs reuses only while size and mtime hold).
        for _ in range(2):
            listed = subprocess.run(["ls", "-l", "--time-style=+%s", str(faxes[0].parent)],
                                    capture_output=True, text=True, check=True, timeout=60).stdout
            sizes = {line.split()[-1]: int(line.split()[4]) for line in listed.splitlines()[1:]}
            assert sizes[faxes[0].name] == len(data)
            assert sizes[faxes[1].name] == PROVISIONAL_SIZE
        rec = sorted((tmp_path / "a" / "recordings").iterdir())[0]
        rec_id = os.getxattr(rec, "user.rc.id")
        with open(rec, "rb") as fh:  # open alone learns the size
            assert os.fstat(fh.fileno()).st_size > 0
            rec_size = os.fstat(fh.fileno()).st_size
    srv.reset_stats()
    with mounted(tmp_path / "b", state_dir=state, **args_for(srv)):
        again = tmp_path / "b" / "faxes" / faxes[0].name
        assert again.stat().st_size == len(data)  # remembered across remounts
        # (its name may have changed once: the download told its real type)
        rec_b = next(p for p in (tmp_path / "b" / "recordings").iterdir() if os.getxattr(p, "user.rc.id") == rec_id)
        assert rec_b.stat().st_size == rec_size
    assert srv.stats()["requests"].get("message-content", 0) == 0
    assert srv.stats()["requests"].get("oauth-token", 0) == 0  # tokens were reused, no new login


def test_ten_thousand_faxes_list_in_few_requests(start_emulator, tmp_path):
    srv = start_emulator(scale="listing", faxes=10_000, window=60.0)
    srv.reset_stats()
    with mounted(tmp_path / "m", state_dir=tmp_path / "s", **args_for(srv)):
        out = subprocess.run(["ls", "-l", str(tmp_path / "m" / "faxes")], capture_output=True, text=True,
                             check=True, timeout=300).stdout
        entries = [l for l in out.splitlines() if l.startswith("-")]
        stats = srv.stats()
    expected = len(seed.build_store(build_config(scale="listing", faxes=10_000)).query_messages(types=["Fax"]))
    ids = {re.search(r"_(\d+)(?:_\d+)?\.\w+$", line).group(1) for line in entries}
    assert len(ids) == expected == 10_000  # every fax (outbound ones also show their source)
    requests = stats["requests"]
    list_requests = requests.get("message-list", 0) + requests.get("message-sync", 0)
    assert list_requests <= -(-10_000 // 1000) + 1, requests
    assert requests.get("message-content", 0) == 0
    assert stats["rate_limited"] == 0


def test_token_expiry_during_long_copy_is_invisible(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, access_token_ttl=2, faults={"latency_ms": 100})
    with mounted(tmp_path / "m", state_dir=tmp_path / "s", **args_for(srv)):
        source = sorted(p.name for p in (tmp_path / "m" / "voicemail").iterdir())
        # One copy job that outlives two token lifetimes by construction (pauses between
        # its files), not by being slow: read-ahead makes a plain `cp -r` too fast for that.
        pause = 5.0 / len(source)
        (tmp_path / "copy").mkdir()
        t0 = time.monotonic()
        subprocess.run(["bash", "-c", f'for f in "$1"/*; do cp "$f" "$2"/ || exit 1; sleep {pause:.3f}; done',
                        "copy", str(tmp_path / "m" / "voicemail"), str(tmp_path / "copy")], check=True, timeout=300)
        elapsed = time.monotonic() - t0
    assert elapsed > 4, "the copy must outlive at least two token lifetimes"
    assert srv.stats()["requests"].get("oauth-token", 0) >= 2  # refreshed along the way
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == source
    assert all(p.stat().st_size > 0 for p in (tmp_path / "copy").iterdir())


def test_revoked_session_gives_eacces_not_a_hang(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)):
        files = sorted((mp / "voicemail").iterdir())
        token_file = next((tmp_path / "s").rglob("tokens.json"))
        assert token_file.stat().st_mode & 0o777 == 0o600
        subprocess.run([sys.executable, "-c", _REVOKE, srv.platform, srv.client_id, srv.client_secret,
                        str(token_file)], check=True, timeout=30)
        # A revoked session alone is survived with one new login (the JWT is still good);
        # revoke the user's JWT credential as well, so nothing can help any more.
        srv.configure(jwt="a-new-credential")
        t0 = time.monotonic()
        with pytest.raises(OSError) as info:
            files[0].read_bytes()
        assert time.monotonic() - t0 < 30
        assert info.value.errno == errno.EACCES
        time.sleep(0.2)
        log = mount_log(mp)
        assert "session ended" in log and "RC_JWT" in log  # says what to do


# Revoke the mount's session with its own stored refresh token (a user logging out elsewhere).
_REVOKE = r"""
import base64, json, sys, httpx
platform, cid, secret, path = sys.argv[1:]
data = json.load(open(path))
tokens = next(iter(data.values())) if isinstance(data, dict) else data
def find(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("access_token", "refresh_token") and isinstance(v, str):
                return v
            r = find(v)
            if r: return r
t = find(data)
auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
r = httpx.post(platform + "/restapi/oauth/revoke", data={"token": t}, headers={"Authorization": auth})
assert r.status_code == 200, r.text
"""


def test_hostile_file_names_stay_inside_their_folder(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, hostile_names=True)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)):
        seen = 0
        for folder in (mp / "mms").iterdir():
            for child in folder.iterdir():
                seen += 1
                name = child.name
                assert "/" not in name and not name.startswith(".") and len(name.encode()) <= 255
                assert child.resolve().parent == folder.resolve()
                child.read_bytes()
        assert seen > 20
        assert not (tmp_path / "etc").exists()
        out = subprocess.run(["find", str(mp)], capture_output=True, text=True, check=True).stdout
        assert all(line.startswith(str(mp)) for line in out.splitlines())


def test_non_empty_and_missing_mountpoints_are_refused(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    env = dict(os.environ, RC_CLIENT_ID="a", RC_CLIENT_SECRET="b", RC_JWT="c")
    r = rcfs("mount", str(tmp_path / "full"), env=env)
    assert r.returncode != 0 and "not empty" in r.stderr
    r = rcfs("mount", str(tmp_path / "nope"), env=env)
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_missing_credentials_say_what_to_set(tmp_path):
    (tmp_path / "m").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    r = rcfs("mount", str(tmp_path / "m"), env=env)
    assert r.returncode != 0
    assert "RC_CLIENT_ID" in r.stderr and "RC_JWT" in r.stderr and "--demo" in r.stderr


def test_help_explains_the_options():
    out = rcfs("mount", "--help").stdout
    for word in ("--demo", "--since", "--cache-size", "--daemon", "allow_other", "--read-only", "RC_JWT"):
        assert word in out, word
    assert "umount" in rcfs("--help").stdout


def test_umount_waits_for_the_process_and_stale_mounts_are_explained(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)) as proc:
        r = rcfs("umount", str(mp))
        assert r.returncode == 0, r.stderr
        assert proc.poll() is not None  # gone by the time umount returned
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)) as proc:
        proc.send_signal(signal.SIGKILL)  # a crash leaves the mountpoint dead
        proc.wait(timeout=10)
        with pytest.raises(OSError) as info:
            os.listdir(mp)
        assert info.value.errno == errno.ENOTCONN
        env = dict(os.environ, **srv.env)
        r = rcfs("mount", str(mp), "--state-dir", str(tmp_path / "s"), env=env)
        assert r.returncode != 0 and "stale" in r.stderr and "rcfs umount" in r.stderr
        r = rcfs("umount", str(mp))
        assert r.returncode == 0 and "stale" in r.stderr
        assert os.listdir(mp) == []


def test_ctrl_c_unmounts_cleanly(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)) as proc:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        with open("/proc/self/mounts") as fh:
            assert str(mp) not in fh.read()


def _named_copy(binary: str, name: str, where: Path) -> Path:
    """A copy of `binary` whose process name (/proc/PID/comm) is `name`."""
    import shutil as _shutil

    target = where / name
    _shutil.copy(_shutil.which(binary), target)
    return target


def test_thumbnailers_are_recognised_as_background_readers(tmp_path):
    from rcfs.api.client import Priority
    from rcfs.fs import reader_priority

    sleeper = subprocess.Popen([str(_named_copy("sleep", "tracker-extract-3", tmp_path)), "5"])
    try:
        deadline = time.monotonic() + 5  # Popen returns before the child has exec'd
        while Path(f"/proc/{sleeper.pid}/comm").read_text().strip() != "tracker-extract":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert reader_priority(sleeper.pid) == Priority.BACKGROUND
        assert reader_priority(os.getpid()) == Priority.FOREGROUND
        # Names longer than comm's 15 characters are recognised by their program name.
        for name in ("gdk-pixbuf-thumbnailer", "totem-video-thumbnailer"):
            long_named = subprocess.Popen([str(_named_copy("sleep", name, tmp_path)), "5"])
            try:
                deadline = time.monotonic() + 5
                # comm changes early in exec, argv (/proc/PID/cmdline) only once the new
                # program's stack is set up: wait for both (a whole-suite run read in between).
                while (Path(f"/proc/{long_named.pid}/comm").read_text().strip() != name[:15]
                       or name.encode() not in Path(f"/proc/{long_named.pid}/cmdline").read_bytes()):
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                assert reader_priority(long_named.pid) == Priority.BACKGROUND, name
            finally:
                long_named.kill()
                long_named.wait()
        assert reader_priority(2**22 + 12345) == Priority.FOREGROUND  # gone: treated as a person
    finally:
        sleeper.kill()
        sleeper.wait()


def test_thumbnailer_reads_correct_bytes_without_429(start_emulator, tmp_path):
    srv = start_emulator(window=2.0, limit_medium=6, hide_sizes=0.0)
    store = seed.build_store(build_config(window=2.0, limit_medium=6, hide_sizes=0.0))
    thumb = _named_copy("cat", "gdk-pixbuf-thumbnailer", tmp_path)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)):
        faxes = sorted((mp / "faxes").iterdir())[:8]
        out = subprocess.run([str(thumb), *map(str, faxes)], capture_output=True, check=True, timeout=120).stdout
        expected = b""
        for path in faxes:
            msg = store.messages[int(os.getxattr(path, "user.rc.id"))]
            att = next(a for a in msg.attachments if a.id == int(os.getxattr(path, "user.rc.attachment_id")))
            expected += att.media.read(0, att.media.size)
        assert hashlib.sha256(out).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert srv.stats()["rate_limited"] == 0


def test_file_manager_thumbnailing_1000_faxes_does_not_starve_a_cp(start_emulator, tmp_path):
    """Four thumbnailer processes work through 1,000 faxes (what opening the folder in a
    file manager starts) and keep the Medium group at its limit; a `cp` of 12 faxes started
    meanwhile must still go first: 8 of its requests use the reserve the thumbnailers
    leave, the other 4 take the first slots that free, so it finishes in about one window
    (measured 2.9 s with a 3 s window). Served first-come, as before thumbnailers were
    recognised by their full program name, it took two windows (6.0 s) and 68 thumbnail
    requests went in between. Nothing may trip a 429."""
    window, limit = 3.0, 40  # the real Medium limit, the window scaled down from 60 s
    options = dict(scale="listing", faxes=1200, window=window, limit_medium=limit, hide_sizes=0.0)
    srv = start_emulator(**options)
    store = seed.build_store(build_config(**options))
    mp = tmp_path / "m"
    thumb = _named_copy("cat", "gdk-pixbuf-thumbnailer", tmp_path)
    with mounted(mp, state_dir=tmp_path / "s", **args_for(srv)):
        faxes = sorted((mp / "faxes").iterdir())
        assert len(faxes) >= 1012  # (a fax may have several documents)
        shown, wanted = faxes[:1000], faxes[1000:1012]
        time.sleep(window + 0.5)  # start with a clean window
        thumbnailers = [subprocess.Popen([str(thumb), *map(str, shown[i::4])], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL) for i in range(4)]
        try:
            deadline = time.monotonic() + 30
            while srv.stats()["requests"].get("message-content", 0) < limit - 10:
                assert time.monotonic() < deadline, "the thumbnailers never got going"
                time.sleep(0.05)
            before = srv.stats()["requests"].get("message-content", 0)
            dest = tmp_path / "copy"
            dest.mkdir()
            t0 = time.monotonic()
            subprocess.run(["cp", *map(str, wanted), str(dest)], check=True, timeout=120)
            cp_seconds = time.monotonic() - t0
            during = srv.stats()["requests"].get("message-content", 0) - before
            assert all(t.poll() is None for t in thumbnailers), "the thumbnailers should still be queued"
        finally:
            for t in thumbnailers:
                t.kill()
                t.wait()
        for path in wanted:
            msg = store.messages[int(os.getxattr(path, "user.rc.id"))]
            att = next(a for a in msg.attachments if a.id == int(os.getxattr(path, "user.rc.attachment_id")))
            assert (dest / path.name).read_bytes() == att.media.read(0, att.media.size), path
    # cp is sequential: between its requests (when it is not waiting) the thumbnailers
    # may take freed slots, so some thumbnail requests during the copy are expected.
    thumbnails_during = during - len(wanted)
    print(f"cp of {len(wanted)} faxes: {cp_seconds:.2f} s, thumbnail requests meanwhile: {thumbnails_during}")
    assert cp_seconds < window * 1.5, (cp_seconds, thumbnails_during)
    assert thumbnails_during <= 40, (cp_seconds, thumbnails_during)
    assert srv.stats()["rate_limited"] == 0


def test_refresh_after_ttl_is_one_sync_request_and_shows_new_and_deleted_messages(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", extra_args=["--listing-ttl", "1"], **args_for(srv)):
        before = set(os.listdir(mp / "faxes"))
        new = srv.admin("POST", "/_emulator/messages", {"type": "Fax", "from": "+15551230000", "pages": 2})
        victim = sorted(before)[0]
        victim_id = os.getxattr(mp / "faxes" / victim, "user.rc.id").decode()
        token = srv.token()
        import httpx
        r = httpx.delete(f"{srv.platform}/restapi/v1.0/account/~/extension/~/message-store/{victim_id}",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 204
        srv.reset_stats()
        deadline = time.monotonic() + 30  # the kernel may keep its entry cache a few seconds
        while time.monotonic() < deadline:
            after = set(os.listdir(mp / "faxes"))
            if victim not in after and any(str(new["id"]) in n for n in after):
                break
            time.sleep(0.5)
        assert victim not in after
        assert any(str(new["id"]) in n for n in after)
        requests = srv.stats()["requests"]
        assert requests.get("message-list", 0) == 0, requests  # no re-listing
        assert requests.get("message-sync", 0) >= 1


def test_daemon_mode_returns_once_mounted(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    mp.mkdir()
    env = dict(os.environ, **srv.env)
    try:
        r = rcfs("mount", str(mp), "--daemon", "--state-dir", str(tmp_path / "s"),
                 "--log-file", str(tmp_path / "log"), env=env)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mp) and "faxes" in os.listdir(mp)
        r = rcfs("umount", str(mp))
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(mp)
    finally:
        force_unmount(mp)
