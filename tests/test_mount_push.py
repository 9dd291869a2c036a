"""Push over a real mount (rcfs.push against the emulator's WebSocket gateway).

Every mount here trusts its listings for an hour (--listing-ttl / --recordings-ttl 3600),
far beyond each test: only a push event can explain a new file in `ls`. Waits are
bounded polls; what is asserted is what appeared and how many requests it cost.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fusehelp import fuse_required, mount_log, mounted

pytestmark = fuse_required

LONG_TTL = ["--listing-ttl", "3600", "--recordings-ttl", "3600"]
ACCOUNT_TELEPHONY = "/telephony/sessions?statusCode=Disconnected&withRecordings=true"
WAIT = 30.0  # seconds a poll may take at most on a loaded machine (not a goal: bench measures)


def args_for(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


def admin(srv, method: str, path: str, body=None):
    r = httpx.request(method, srv.platform + path, json=body, timeout=10)
    assert r.is_success, r.text
    return r.json() if r.content else None


def push_status(mp: Path) -> dict:
    return json.loads(os.getxattr(mp, "user.rc.status"))["push"]


def wait_for(what, predicate, mp: Path, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s; push {push_status(mp)}\n{mount_log(mp)[-4000:]}")
        time.sleep(0.05)


def listed(mp: Path, folder: str, object_id) -> list[str]:
    return [n for n in os.listdir(mp / folder) if f"_{object_id}" in n]


def api_requests(stats: dict) -> dict:
    return {k: v for k, v in stats["requests"].items() if not k.startswith("admin-")}


def up(mp: Path):
    """The channel is up and done with the syncs its subscription started (a folder listed
    before the subscription was active is synced once, so that it can be trusted)."""
    return wait_for("push channel up and settled",
                    lambda: (lambda s: s["state"] == "up" and s["pending"] == 0)(push_status(mp)), mp)


def test_new_fax_voicemail_and_recording_appear_through_push(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        for top in ("faxes", "voicemail", "recordings", "mms", "texts"):
            os.listdir(mp / top)
        up(mp)
        # the mailbox, the user's ended calls, and (an admin: /company) the account's
        assert push_status(mp)["filters"] == 3
        conn = admin(srv, "GET", "/_emulator/push")["connections"]
        assert len(conn) == 1 and sorted(conn[0]["eventFilters"]) == sorted([
            f"/restapi/v1.0/account/{srv_ids(srv)[0]}/extension/{srv_ids(srv)[1]}/message-store",
            f"/restapi/v1.0/account/{srv_ids(srv)[0]}/extension/{srv_ids(srv)[1]}/telephony/sessions"
            "?statusCode=Disconnected",
            f"/restapi/v1.0/account/{srv_ids(srv)[0]}{ACCOUNT_TELEPHONY}"])
        srv.reset_stats()

        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax", "pages": 1})
        name = wait_for("the new fax in ls", lambda: listed(mp, "faxes", fax["id"]), mp)
        assert (mp / "faxes" / name[0]).read_bytes()[:4] == b"%PDF"

        vm = admin(srv, "POST", "/_emulator/messages", {"type": "VoiceMail", "seconds": 2})
        wait_for("the new voicemail in ls", lambda: listed(mp, "voicemail", vm["id"]), mp)

        # /texts (issue 16): a text from a new number is a new conversation file.
        before = set(os.listdir(mp / "texts"))
        admin(srv, "POST", "/_emulator/messages", {"type": "SMS", "from": "+14155550142", "text": "pushed text"})
        new = wait_for("the new conversation in /texts", lambda: set(os.listdir(mp / "texts")) - before, mp)
        assert any("pushed text" in (mp / "texts" / n).read_text() for n in new)

        # The call log has the recording only 1.5 s after the call ended: rcfs asks again.
        call = admin(srv, "POST", "/_emulator/calls/live", {"from": "+16175550111", "seconds": 31,
                                                       "callLogDelay": 1.5})
        rec = wait_for("the new recording in ls", lambda: listed(mp, "recordings", call["recordingId"]), mp)
        assert rec[0].endswith(".mp3")

        requests = api_requests(srv.stats())
        # Incremental: message-sync (ISync) for each message event, never a full listing;
        # the call log only asked by telephony session, never re-listed whole.
        assert requests.get("message-list", 0) == 0
        assert 2 <= requests["message-sync"] <= 6  # faxes, voicemail, texts and mms (SMS)
        assert requests.get("call-log", 0) >= 2  # once before the call log had it, then again
        assert push_status(mp)["notifications"] >= 3


def srv_ids(srv) -> tuple[str, str]:
    info = admin(srv, "GET", "/_emulator/info")
    return info["account_id"], info["extension_id"]


def test_socket_stalled_then_recovered_replays_the_missed_event(start_emulator, tmp_path):
    # idle 3 s: rcfs probes with a Heartbeat after 1 s of silence and gives it 1 s.
    srv = start_emulator(window=1.0, ws_idle_timeout=3, ws_recovery_timeout=20, ws_token_ttl=600)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        for top in ("faxes", "voicemail", "recordings", "mms"):
            os.listdir(mp / top)
        up(mp)
        before = push_status(mp)
        srv.reset_stats()
        admin(srv, "POST", "/_emulator/push", {"stall": 6})  # a black hole: nothing in, nothing out
        vm = admin(srv, "POST", "/_emulator/messages", {"type": "VoiceMail"})
        wait_for("the voicemail sent during the stall", lambda: listed(mp, "voicemail", vm["id"]), mp)
        gw = admin(srv, "GET", "/_emulator/push")["counts"]
        assert gw.get("recoveries_successful", 0) == 1 and gw.get("recoveries_failed", 0) == 0
        after = push_status(mp)
        assert after["recovered"] == before["recovered"] + 1
        assert after["resyncs"] == before["resyncs"]  # replayed: no folder had to be re-synced
        requests = api_requests(srv.stats())
        assert requests.get("message-sync") == 1  # /voicemail's one ISync for the replayed event
        assert requests.get("ws-subscription-create", 0) == 0  # the subscription survived
        assert requests.get("oauth-wstoken", 0) == 0  # the ws token was reused

        # Dropped outright (code 1011): recovered again, and the next event still arrives.
        admin(srv, "POST", "/_emulator/push", {"drop": True})
        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
        wait_for("the fax sent around the drop", lambda: listed(mp, "faxes", fax["id"]), mp)
        wait_for("the second recovery", lambda: push_status(mp)["recovered"] == before["recovered"] + 2, mp)
        assert "down" in mount_log(mp)  # said so in the log


def test_recovery_refused_then_one_sync_per_folder_and_nothing_missed(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, ws_idle_timeout=3, ws_recovery_timeout=20)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        for top in ("faxes", "voicemail", "recordings", "mms"):
            os.listdir(mp / top)
        up(mp)
        before = push_status(mp)
        admin(srv, "POST", "/_emulator/push", {"fail_recoveries": 1})
        admin(srv, "POST", "/_emulator/push", {"stall": 6})
        srv.reset_stats()
        # Sent while the socket is a black hole: its event dies with the unrecovered session.
        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
        wait_for("the fax from the outage", lambda: listed(mp, "faxes", fax["id"]), mp)
        wait_for("four resyncs", lambda: push_status(mp)["resyncs"] - before["resyncs"] >= 4, mp)
        after = push_status(mp)
        assert after["recovery_failed"] == before["recovery_failed"] + 1
        requests = api_requests(srv.stats())
        # One incremental sync per listed folder: faxes, voicemail and mms one ISync each,
        # recordings one call-log listing; a new subscription on the same socket.
        assert requests.get("message-sync") == 3, requests
        assert requests.get("call-log") == 1, requests
        assert requests.get("message-list", 0) == 0
        assert requests.get("ws-subscription-create") == 1
        gw = admin(srv, "GET", "/_emulator/push")["counts"]
        assert gw.get("recoveries_failed") == 1


def test_idle_mount_makes_no_request_over_several_idle_timeouts_and_keeps_its_socket(start_emulator, tmp_path):
    srv = start_emulator(window=1.0, ws_idle_timeout=2)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=["--listing-ttl", "1"], **args_for(srv)):
        for top in ("faxes", "voicemail", "recordings", "mms"):
            os.listdir(mp / top)
        up(mp)
        conn = admin(srv, "GET", "/_emulator/push")["connections"]
        srv.reset_stats()
        heartbeats = admin(srv, "GET", "/_emulator/push")["counts"].get("heartbeats", 0)
        time.sleep(7)  # 3.5 idle timeouts
        for top in ("faxes", "voicemail", "recordings", "mms"):
            os.listdir(mp / top)  # a listing TTL of 1 s has long passed: push keeps them trusted
        assert api_requests(srv.stats()) == {}
        gw = admin(srv, "GET", "/_emulator/push")
        assert [c["id"] for c in gw["connections"]] == [c["id"] for c in conn]  # the same socket
        assert gw["counts"].get("timeouts_WSG-902", 0) == 0
        assert gw["counts"]["heartbeats"] - heartbeats >= 3  # what kept it alive


def test_no_push_polls_as_before_and_asks_for_no_ws_token(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=False, extra_args=LONG_TTL, **args_for(srv)):
        os.listdir(mp / "faxes")
        assert push_status(mp) == {"state": "off"}
        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
        time.sleep(1.5)
        assert listed(mp, "faxes", fax["id"]) == []  # the hour-long TTL holds without push
    assert srv.stats()["requests"].get("oauth-wstoken", 0) == 0
    assert admin(srv, "GET", "/_emulator/push")["counts"].get("connections", 0) == 0


@pytest.mark.skipif(not shutil.which("inotifywait"), reason="needs inotifywait (apt-get install inotify-tools)")
def test_inotify_watchers_see_a_pushed_file_created(start_emulator, tmp_path):
    """What an open GNOME Files window needs: an IN_CREATE for the new file, raised by rcfs's
    own harmless mknod(2) from a worker thread (FUSE invalidations raise none)."""
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        before = set(os.listdir(mp / "voicemail"))
        up(mp)
        watch = subprocess.Popen(["inotifywait", "-m", "-e", "create,attrib,moved_to,delete", "--format", "%e %f",
                                  str(mp / "voicemail")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "Watches established" in watch.stderr.readline() + watch.stderr.readline()
            srv.reset_stats()
            vm = admin(srv, "POST", "/_emulator/messages", {"type": "VoiceMail"})
            seen = []  # every event until the new file's CREATE (others: logged, not wanted)
            deadline = time.monotonic() + WAIT
            # Raw reads, not readline(): several events can arrive in one chunk (the first
            # sync's announcements can land after the watch starts), and lines left in a
            # file object's buffer are invisible to select(): the wait would time out with
            # the wanted event already read.
            pending = b""
            while not any(e == "CREATE" and f"_{vm['id']}." in n for e, n in seen):
                ready, _, _ = select.select([watch.stdout], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"no CREATE within {WAIT} s; events {seen}\n{mount_log(mp)[-3000:]}"
                chunk = os.read(watch.stdout.fileno(), 65536)
                assert chunk, f"inotifywait ended; events {seen}"
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    event, _, name = os.fsdecode(line).partition(" ")
                    seen.append((event, name))
            name = next(n for e, n in seen if e == "CREATE" and f"_{vm['id']}." in n)
            assert set(os.listdir(mp / "voicemail")) - before == {name.strip()}
            # Nothing was created anywhere: the folder still refuses writes, the file reads.
            with pytest.raises(PermissionError):
                (mp / "voicemail" / "new.txt").write_text("x")
            assert (mp / "voicemail" / name.strip()).read_bytes()[:3] in (b"ID3", b"RIF")
            # The write bit shows only while the announcement runs (the event comes from
            # inside it): once it is over, the folder is read-only again.
            wait_for("the folder's mode back to 0500",
                     lambda: stat.S_IMODE((mp / "voicemail").stat().st_mode) == 0o500, mp)
        finally:
            watch.terminate()
            watch.wait(timeout=10)
            watch.stdout.close()
            watch.stderr.close()
    # the announcement cost no API request beyond the one sync and the file read
    requests = api_requests(srv.stats())
    assert requests.get("message-list", 0) == 0 and requests.get("message-sync") == 1


def listed_folders_up(srv, mp: Path) -> dict:
    for top in ("faxes", "voicemail", "recordings", "mms"):
        os.listdir(mp / top)
    up(mp)
    return push_status(mp)


def test_an_ended_oauth_session_ends_in_a_new_login_a_new_channel_and_nothing_missed(start_emulator, tmp_path):
    """An admin ends every session of the user (a logout, a password change): the gateway
    closes the socket. rcfs logs in again with the JWT through its auth module, takes a new
    ws token for the new session, subscribes again (the old gateway session went with the
    old OAuth session) and syncs every listed folder once: the fax sent meanwhile appears."""
    srv = start_emulator(window=1.0, ws_recovery_timeout=20)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        before = listed_folders_up(srv, mp)
        srv.reset_stats()
        # The fax arrives while the channel is down: stored just before the new session's ws
        # token is answered, i.e. after the old subscription died and before the new one.
        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax", "deliverBefore": "oauth-wstoken"})
        assert admin(srv, "POST", "/_emulator/sessions/end", {"which": "all"})["ended"] == 1
        wait_for("the fax sent while the session was dead", lambda: listed(mp, "faxes", fax["id"]), mp)
        wait_for("a resync of every folder",
                 lambda: push_status(mp)["resyncs"] - before["resyncs"] >= before["resyncs"], mp)
        up(mp)
        after = push_status(mp)
        requests = api_requests(srv.stats())
        # One refused refresh, one JWT grant; one new ws token (the old one died with its
        # session); one new subscription; one incremental sync per listed folder.
        assert requests.get("oauth-token") == 2, requests
        assert requests.get("oauth-wstoken") == 2, requests  # the first one learns (401) the session died
        assert requests.get("ws-subscription-create") == 1, requests
        assert requests.get("message-sync") == 3 and requests.get("call-log") == 1, requests
        assert requests.get("message-list", 0) == 0
        # As many resyncs as the first subscription made (one per folder owner).
        assert after["resyncs"] - before["resyncs"] == before["resyncs"]
        assert after["connects"] - before["connects"] == 1
        # At once: the socket's Error (401) made the next attempt take a new ws token, which
        # made the auth module log in again; no attempt was wasted on the dead one.
        assert after["attempts"] - before["attempts"] == 1 and after["new_logins"] == 1
        gw = admin(srv, "GET", "/_emulator/push")
        assert len(gw["connections"]) == 1 and gw["counts"]["closed_session_ended"] == 1
        log = mount_log(mp)
        assert "the OAuth session behind the push channel ended" in log, log[-3000:]
        assert not re.search(r"(access_token|wsc)=(?!\*\*\*)", log)  # no ws token or wsc logged
        assert "push channel back" in log
        # Still live: the next event arrives by push.
        vm = admin(srv, "POST", "/_emulator/messages", {"type": "VoiceMail"})
        wait_for("a voicemail after the new login", lambda: listed(mp, "voicemail", vm["id"]), mp)


def test_a_refused_login_leaves_the_channel_down_with_its_reason_in_status_and_no_hot_loop(start_emulator, tmp_path):
    """The user's JWT is revoked and the session ended: rcfs cannot log in again. The log says
    so once, `rcfs status` shows the channel down with the reason and that a remount is
    needed, listings fall back to their TTL, and the channel does not hammer the Auth group."""
    srv = start_emulator(window=1.0)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=["--listing-ttl", "1"], **args_for(srv)):
        listed_folders_up(srv, mp)
        admin(srv, "POST", "/_emulator/config", {"jwt": "revoked"})
        srv.reset_stats()
        admin(srv, "POST", "/_emulator/sessions/end", {"which": "all"})
        down = wait_for("the channel down for good", lambda: (lambda s: s["state"] == "down" and s["final"] and (
            "login was refused" in (s["why"] or "")) and s)(push_status(mp)), mp)
        assert "login was refused" in down["why"] and "JWT" in down["why"]
        shown = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mp)], capture_output=True, text=True,
                               timeout=60)
        line = [ln for ln in shown.stdout.splitlines() if ln.startswith("push  ")]  # (not "push filters")
        assert len(line) == 1 and "DOWN for " in line[0] and "(the account's login was refused" in line[0], shown.stdout
        assert "not retrying: remount once the credentials are fixed" in line[0]
        # Polling fallback: the listing's TTL (1 s) applies again; the look reaches the API
        # (and fails fast: the session is gone), the cached listing is still shown.
        time.sleep(1.5)
        assert os.listdir(mp / "faxes")
        attempts = push_status(mp)["attempts"]
        time.sleep(3)  # a bound: a hot loop would make hundreds of attempts here
        assert push_status(mp)["attempts"] - attempts <= 1
        requests = api_requests(srv.stats())
        # The refused ws token, the refused refresh, the refused JWT grant: nothing more.
        assert requests.get("oauth-token") == 2 and requests.get("oauth-wstoken") == 1, requests
        log = mount_log(mp)
        assert log.count("push channel down") == 1
        assert log.count("push channel stays down until rcfs is mounted again: the account's login was refused") == 1
        assert "credentials rejected: the JWT credential is no longer accepted" in log


def suspended(srv, proc: subprocess.Popen, *, then=lambda: None):
    """The machine sleeps: the mount process stops (SIGSTOP) until the gateway has idled its
    socket out (WSG-902: no client frame for idleTimeout), `then()` runs meanwhile (the
    test must not touch the mount: a stopped FUSE server would hang it), then SIGCONT."""
    import signal

    timeouts = lambda: admin(srv, "GET", "/_emulator/push")["counts"].get("timeouts_WSG-902", 0)  # noqa: E731
    before = timeouts()
    proc.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + WAIT
        while timeouts() == before:
            assert time.monotonic() < deadline, "the gateway did not idle the stopped mount's socket out"
            time.sleep(0.05)
        return then()
    finally:
        proc.send_signal(signal.SIGCONT)


def test_sleep_and_resume_within_the_recovery_window_recovers_and_replays(start_emulator, tmp_path):
    # idle 3 s: rcfs heartbeats every second and allows a second for the answer (a loaded
    # machine can be slower than a third of a second, and a false alarm is an extra recovery).
    srv = start_emulator(window=1.0, ws_idle_timeout=3, ws_recovery_timeout=60, ws_token_ttl=600)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)) as proc:
        before = listed_folders_up(srv, mp)
        srv.reset_stats()
        counts = admin(srv, "GET", "/_emulator/push")["counts"]  # (cumulative: compared as deltas)
        fax = suspended(srv, proc, then=lambda: admin(srv, "POST", "/_emulator/messages", {"type": "Fax"}))
        wait_for("the fax that came while asleep", lambda: listed(mp, "faxes", fax["id"]), mp)
        up(mp)
        after = push_status(mp)
        assert after["recovered"] == before["recovered"] + 1 and after["recovery_failed"] == before["recovery_failed"]
        assert after["resyncs"] == before["resyncs"]  # the gateway replayed the event
        requests = api_requests(srv.stats())
        assert requests.get("message-sync") == 1, requests  # /faxes' one ISync for the replayed event
        assert requests.get("ws-subscription-create", 0) == 0 and requests.get("message-list", 0) == 0
        gw = admin(srv, "GET", "/_emulator/push")
        delta = {k: gw["counts"].get(k, 0) - counts.get(k, 0) for k in ("timeouts_WSG-902", "recoveries_successful")}
        assert delta == {"timeouts_WSG-902": 1, "recoveries_successful": 1}
        assert len(gw["connections"]) == 1


def test_sleep_and_resume_beyond_the_recovery_window_resubscribes_and_misses_nothing(start_emulator, tmp_path):
    # Asleep longer than idleTimeout (2 s), recoveryTimeout (2 s) and the ws token's life (3 s).
    srv = start_emulator(window=1.0, ws_idle_timeout=2, ws_recovery_timeout=2, ws_token_ttl=3)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)) as proc:
        before = listed_folders_up(srv, mp)
        srv.reset_stats()
        counts = admin(srv, "GET", "/_emulator/push")["counts"]  # (cumulative: compared as deltas)

        def asleep():
            fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
            vm = admin(srv, "POST", "/_emulator/messages", {"type": "VoiceMail"})
            time.sleep(4)  # the machine sleeps on: past the recovery window and the ws token
            return fax, vm

        fax, vm = suspended(srv, proc, then=asleep)
        wait_for("the fax that came while asleep", lambda: listed(mp, "faxes", fax["id"]), mp)
        wait_for("the voicemail that came while asleep", lambda: listed(mp, "voicemail", vm["id"]), mp)
        wait_for("a resync of every folder",
                 lambda: push_status(mp)["resyncs"] - before["resyncs"] >= before["resyncs"], mp)
        up(mp)
        after = push_status(mp)
        assert after["recovered"] == before["recovered"]
        assert after["resyncs"] - before["resyncs"] == before["resyncs"]  # one per folder owner
        requests = api_requests(srv.stats())
        # A new ws token (the old one expired), no new login, a new subscription, one
        # incremental sync per listed folder.
        assert requests.get("oauth-wstoken") == 1 and requests.get("oauth-token", 0) == 0, requests
        assert requests.get("ws-subscription-create") == 1, requests
        assert requests.get("message-sync") == 3 and requests.get("call-log") == 1, requests
        assert requests.get("message-list", 0) == 0
        gw = admin(srv, "GET", "/_emulator/push")
        delta = {k: gw["counts"].get(k, 0) - counts.get(k, 0) for k in ("timeouts_WSG-902", "recoveries_successful")}
        assert delta == {"timeouts_WSG-902": 1, "recoveries_successful": 0} and len(gw["connections"]) == 1
        # Still live afterwards.
        fax2 = admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
        wait_for("a fax after the resume", lambda: listed(mp, "faxes", fax2["id"]), mp)


# company mode (issue 17 on top of issue 15) ----------------------------------------------------


def log_since(mp: Path, mark: int) -> list[str]:
    return mount_log(mp)[mark:].splitlines()


def test_admin_mount_shows_another_extensions_ended_recorded_call_by_push(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    account, me = srv_ids(srv)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        recordings = mp / "company" / "recordings"
        months = os.listdir(recordings)  # the first listing, whole
        before = {n for m in months for n in os.listdir(recordings / m)}
        users = mp / "company" / "users"
        bob = next(users / u for u in os.listdir(users)
                   if os.getxattr(users / u, "user.rc.extension_number") == b"103")
        bob_id = os.getxattr(bob, "user.rc.id").decode()
        bob_before = set(os.listdir(bob / "recordings"))  # Bob's own folder, listed too
        os.listdir(mp / "recordings")  # and the admin's
        up(mp)
        filters = admin(srv, "GET", "/_emulator/push")["connections"][0]["eventFilters"]
        assert f"/restapi/v1.0/account/{account}{ACCOUNT_TELEPHONY}" in filters
        assert len(filters) == 3  # the user's mailbox and calls, and the account's calls
        srv.reset_stats()
        mark = len(mount_log(mp))

        # Bob's call (not the signed-in admin's); the call log has it 1.5 s after it ends.
        call = admin(srv, "POST", "/_emulator/calls/live", {"extension": "103", "from": "+16175550123",
                                                           "seconds": 31, "callLogDelay": 1.5})
        month = time.strftime("%Y-%m", time.gmtime())

        def shown() -> set[str]:
            return set(os.listdir(recordings / month)) if month in os.listdir(recordings) else set()

        new = wait_for("Bob's recording in /company/recordings", lambda: shown() - before, mp)
        assert [n.rsplit("_", 1)[1] for n in new] == [f"{call['recordingId']}.mp3"]
        assert "_x103_from_" in next(iter(new))
        assert (recordings / month / next(iter(new))).read_bytes()[:3] == b"ID3"

        # ... and in Bob's own recordings folder, from the same account-level event.
        bobs = wait_for("Bob's recording in his folder", lambda: set(os.listdir(bob / "recordings")) - bob_before, mp)
        assert [n.rsplit("_", 1)[1] for n in bobs] == [f"{call['recordingId']}.mp3"]
        assert not listed(mp, "recordings", call["recordingId"])  # not the admin's call

        requests = api_requests(srv.stats())
        # Only the call logs asked by that telephony session (again while they lagged): the
        # company's for /company/recordings, Bob's for his folder; never a month re-listed,
        # nor the admin's own call log (not the admin's call).
        asked = [line for line in log_since(mp, mark) if "HTTP Request" in line and "/call-log?" in line]
        assert asked and all(f"telephonySessionId={call['telephonySessionId']}" in line for line in asked), asked
        company = [line for line in asked if "/account/~/call-log?" in line]
        bobs_log = [line for line in asked if f"/extension/{bob_id}/call-log?" in line]
        assert len(company) + len(bobs_log) == len(asked) and len(company) >= 2 and len(bobs_log) >= 1, asked
        assert requests.get("call-log-account") == len(company), requests
        assert requests.get("call-log") == len(bobs_log) and requests.get("message-sync", 0) == 0, requests
        gw = admin(srv, "GET", "/_emulator/push")["counts"]
        assert gw.get("notifications_sent", 0) >= 1


def test_admin_mount_pushes_a_fax_into_another_users_open_mailbox(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    account, me = srv_ids(srv)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL, **args_for(srv)):
        users = mp / "company" / "users"
        by_number = {os.getxattr(users / u, "user.rc.extension_number").decode(): u
                     for u in os.listdir(users) if "user.rc.extension_number" in os.listxattr(users / u)}
        alice_id = os.getxattr(users / by_number["102"], "user.rc.id").decode()
        bob = users / by_number["103"]
        os.listdir(bob)  # opened, none of its folders listed: no filter for Bob
        alice = users / by_number["102"]
        before = set(os.listdir(alice / "faxes"))
        os.listdir(mp / "faxes")  # the admin's own, listed too: must not sync for Alice's fax
        up(mp)
        alice_filter = f"/restapi/v1.0/account/{account}/extension/{alice_id}/message-store"
        wait_for("Alice's mailbox in the subscription",
                 lambda: alice_filter in admin(srv, "GET", "/_emulator/push")["connections"][0]["eventFilters"], mp)
        filters = admin(srv, "GET", "/_emulator/push")["connections"][0]["eventFilters"]
        assert len(filters) == 4 and not any("/extension/" + os.getxattr(bob, "user.rc.id").decode() in f
                                             for f in filters), filters
        up(mp)
        report = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mp)], capture_output=True,
                                text=True, timeout=30)
        assert "push filters       4 in the subscription\n" in report.stdout, report.stdout
        srv.reset_stats()

        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax", "pages": 1, "extension": "102"})
        name = wait_for("Alice's new fax in her folder", lambda: set(os.listdir(alice / "faxes")) - before, mp)
        assert any(f"_{fax['id']}" in n for n in name)
        assert (alice / "faxes" / next(iter(name))).read_bytes()[:4] == b"%PDF"
        assert not listed(mp, "faxes", fax["id"])  # not in the admin's own

        requests = api_requests(srv.stats())
        # One targeted ISync of Alice's faxes; no listing, no sync of the admin's own faxes.
        assert requests.get("message-sync") == 1 and requests.get("message-list", 0) == 0, requests
        syncs = [r for r in admin(srv, "GET", "/_emulator/requests")["requests"] if r["route"] == "message-sync"]
        assert len(syncs) == 1 and f"/extension/{alice_id}/" in syncs[0]["path"], syncs


def test_regular_user_mount_subscribes_to_its_own_mailbox_only_and_meets_no_403(start_emulator, tmp_path):
    srv = start_emulator(window=1.0)
    account, _ = srv_ids(srv)
    mp = tmp_path / "m"
    with mounted(mp, state_dir=tmp_path / "s", push=True, extra_args=LONG_TTL,
                 **{**args_for(srv), "jwt": srv.user_jwt}):
        assert not os.path.exists(mp / "company")
        before = set(os.listdir(mp / "faxes"))
        up(mp)
        filters = admin(srv, "GET", "/_emulator/push")["connections"][0]["eventFilters"]
        assert len(filters) == 2 and not any(f.endswith(ACCOUNT_TELEPHONY) for f in filters), filters
        ext_ids = {f.split("/extension/")[1].split("/")[0] for f in filters}
        assert len(ext_ids) == 1 and ext_ids != {srv_ids(srv)[1]}  # the user's own id, not the admin's
        fax = admin(srv, "POST", "/_emulator/messages", {"type": "Fax", "extension": "102"})  # the user's
        wait_for("the user's new fax", lambda: set(os.listdir(mp / "faxes")) - before, mp)
        assert listed(mp, "faxes", fax["id"])
    assert srv.stats()["statuses"].get("403", 0) == 0
