"""/company on real mounts against the emulated company (issue 15): an admin's mount shows
every extension's mailbox and every recorded call of the account once; a regular user's
mount has no /company and provokes no 403; a 403 on one extension costs only its folder;
the Archiver recipe (rsync -a of a month, twice) copies each recording once."""

from __future__ import annotations

import datetime as dt
import errno
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import httpx

from rcfs.emulator import seed

from conftest import build_config
from fusehelp import fuse_required, mount_log, mounted
from outboxhelp import wait_until

pytestmark = fuse_required

ACCT = "/restapi/v1.0/account/~"
ROOMY = dict(limit_heavy=1000, limit_medium=1000, limit_light=1000, window=10)


def _mount(srv, tmp_path: Path, name: str = "m", *, jwt: str | None = None, extra: list[str] = ()):
    return mounted(tmp_path / name, server_url=srv.platform, client_id=srv.client_id,
                   client_secret=srv.client_secret, jwt=jwt or srv.jwt, state_dir=tmp_path / f"{name}-state",
                   extra_args=list(extra))


def _run(*cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def _company_calls(srv, token: str) -> list[dict]:
    r = httpx.get(srv.platform + ACCT + "/call-log", timeout=30, headers={"Authorization": f"Bearer {token}"},
                  params={"dateFrom": "2000-01-01T00:00:00Z", "recordingType": "All", "perPage": 1000})
    r.raise_for_status()
    return r.json()["records"]


def _month_recordings(calls: list[dict]) -> dict[str, set[str]]:
    months: dict[str, set[str]] = {}
    for c in calls:
        start = dt.datetime.fromisoformat(c["startTime"].replace("Z", "+00:00"))
        months.setdefault(start.strftime("%Y-%m"), set()).add(c["recording"]["id"])
    return months


def test_an_admin_mounts_the_whole_company(start_emulator, tmp_path):
    srv = start_emulator(**ROOMY)
    store = seed.build_store(build_config(**ROOMY))  # same seed: the same ids and media bytes
    company = store.company
    with _mount(srv, tmp_path):
        mnt = tmp_path / "m"
        assert "company" in os.listdir(mnt)
        assert sorted(os.listdir(mnt / "company")) == ["recordings", "users"]
        srv.reset_stats()

        # ls /company/users: the extension list, one Medium request, every extension shown
        # (disabled and unassigned ones too), names sanitised, facts in xattrs.
        users = sorted(os.listdir(mnt / "company" / "users"))
        assert len(users) == len(company.extensions)
        assert srv.stats()["requests"].get("extension-list") == 1
        by_id = {os.getxattr(mnt / "company" / "users" / u, "user.rc.id").decode(): u for u in users}
        assert set(by_id) == set(company.extensions)
        for ext_id, name in by_id.items():
            ext = company.get(ext_id)
            assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name) and "/" not in name
            folder = mnt / "company" / "users" / name
            assert os.getxattr(folder, "user.rc.status").decode() == ext.status
            assert os.getxattr(folder, "user.rc.type").decode() == ext.type
            if ext.number:
                assert name.startswith(f"{ext.number} ")
        carol = by_id[company.by_number("106").id]
        getfattr = _run("getfattr", "-d", str(mnt / "company" / "users" / carol))
        assert 'user.rc.status="Disabled"' in getfattr.stdout and "carol.white@example.com" in getfattr.stdout
        assert any(u.endswith(f"({company.extensions[e].id})") for e, u in by_id.items()
                   if company.extensions[e].number is None)

        # find -maxdepth 3 names every mailbox's folders without asking for any of them.
        found = _run("find", str(mnt / "company"), "-maxdepth", "3")
        assert found.returncode == 0, found.stderr
        assert found.stdout.count("/faxes\n") == len(company.extensions)
        stats = srv.stats()["requests"]
        assert stats.get("message-list", 0) == stats.get("message-sync", 0) == stats.get("call-log", 0) == 0
        assert stats.get("extension-list") == 1 and stats.get("call-log-account", 0) >= 1

        # cp -r of another user's mailbox: byte-identical to the emulator's media.
        alice = company.by_number("102")
        dest = tmp_path / "alice"
        cp = _run("cp", "-r", str(mnt / "company" / "users" / by_id[alice.id]), str(dest))
        assert cp.returncode == 0, cp.stderr + mount_log(mnt)[-2000:]
        # Media files; the texts transcripts are rendered from the listing (tests/test_texts.py).
        copied = sorted(p for p in dest.rglob("*") if p.is_file() and p.relative_to(dest).parts[0] != "texts")
        assert (dest / "texts").is_dir()
        assert len(copied) >= len([m for m in alice.store.messages.values() if m.type != "SMS"])
        for path in copied:
            rel = path.relative_to(dest)
            src = mnt / "company" / "users" / by_id[alice.id] / rel
            kind = os.getxattr(src, "user.rc.type").decode()
            oid = os.getxattr(src, "user.rc.id").decode()
            if kind == "Recording":
                media = company.recording(oid).media
            else:
                att = int(os.getxattr(src, "user.rc.attachment_id"))
                media = next(a.media for a in alice.store.messages[int(oid)].attachments if a.id == att)
            assert path.read_bytes() == media.read(0, media.size), rel

        # /company/recordings: every recorded call of the account once, by month.
        calls = _company_calls(srv, srv.token())
        months = _month_recordings(calls)
        legs = sum(1 for c in calls) - sum(len(r) for r in months.values())
        assert legs > 0  # calls between extensions: two records, one recording
        shown = {m: set(os.listdir(mnt / "company" / "recordings" / m))
                 for m in os.listdir(mnt / "company" / "recordings")}
        assert set(shown) == set(months)
        for month, rids in months.items():
            assert sorted(n.rsplit("_", 1)[1].split(".")[0] for n in shown[month]) == sorted(rids)
            assert list(sorted(shown[month])) == sorted(shown[month], key=lambda n: n[:19])  # time order
        internal = [n for names in shown.values() for n in names if "_internal_" in n]
        assert internal and all("-x" in n for n in internal)

        # rsync -a of the busiest month: byte-identical; a second run copies nothing and
        # costs no content request (the Archiver recipe of the README).
        month = max(months, key=lambda m: len(months[m]))
        backup = tmp_path / "backup"
        srv.reset_stats()
        first = _run("rsync", "-a", "--stats", f"{mnt}/company/recordings/{month}/", str(backup))
        assert first.returncode == 0, first.stderr + mount_log(mnt)[-2000:]
        assert srv.stats()["requests"].get("recording-content") == len(months[month])
        for path in backup.iterdir():
            rid = path.name.rsplit("_", 1)[1].split(".")[0]
            media = company.recording(rid).media
            assert path.read_bytes() == media.read(0, media.size), path.name
            assert path.suffix == ".mp3"  # stable names: the real type is in the xattr
            src = mnt / "company" / "recordings" / month / path.name
            assert os.getxattr(src, "user.rc.content_type").decode() == media.content_type
        srv.reset_stats()
        second = _run("rsync", "-a", "--stats", f"{mnt}/company/recordings/{month}/", str(backup))
        assert second.returncode == 0, second.stderr
        assert "Number of regular files transferred: 0" in second.stdout, second.stdout
        assert srv.stats()["requests"].get("recording-content", 0) == 0

        report = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mnt)], capture_output=True,
                                text=True, timeout=30)
        assert report.returncode == 0 and f"{len(company.extensions)} extensions" in report.stdout, report.stdout
        assert f"{sum(len(r) for r in months.values())} recordings" in report.stdout


def test_a_regular_user_has_no_company_and_meets_no_403(start_emulator, tmp_path):
    srv = start_emulator(**ROOMY)
    with _mount(srv, tmp_path, jwt=srv.user_jwt):
        mnt = tmp_path / "m"
        assert sorted(os.listdir(mnt)) == ["exports", "faxes", "greetings", "mms", "outbox", "recordings",
                                           "texts", "voicemail"]
        for top in ("faxes", "voicemail", "recordings", "mms"):
            listed = _run("ls", "-l", str(mnt / top))
            assert listed.returncode == 0, listed.stderr
        assert os.listdir(mnt / "faxes")  # the user's own mailbox (extension 102) is there
        assert not os.path.exists(mnt / "company")
        # An export covers every extension (admins only): refused without asking.
        made = _run("mkdir", str(mnt / "exports" / "2026-01-01..2026-01-31"))
        assert made.returncode != 0 and os.strerror(errno.EACCES) in made.stderr
        assert "[Users]" in mount_log(mnt)
    stats = srv.stats()
    assert stats["statuses"].get("403", 0) == 0, stats["statuses"]
    assert stats["requests"].get("authz-profile") == 1
    assert stats["requests"].get("report-create", 0) == 0


def test_a_403_on_one_extension_costs_only_that_folder(start_emulator, tmp_path):
    store = seed.build_store(build_config(**ROOMY))
    bob, carol, alice = (store.company.by_number(n) for n in ("103", "106", "102"))
    srv = start_emulator(**ROOMY, denied_extensions=(bob.id,))
    with _mount(srv, tmp_path, extra=["--listing-ttl", "1"]):
        mnt = tmp_path / "m"
        users = mnt / "company" / "users"
        names = {os.getxattr(users / u, "user.rc.id").decode(): u for u in os.listdir(users)}
        assert os.listdir(users / names[alice.id] / "faxes")
        srv.reset_stats()
        denied = _run("ls", str(users / names[bob.id] / "faxes"))
        assert denied.returncode != 0 and os.strerror(errno.EACCES) in denied.stderr
        assert srv.stats()["statuses"].get("403") == 1  # asked once, not once per request kind
        assert "[ReadMessages]" in mount_log(mnt)
        assert len(os.listdir(users)) == len(store.company.extensions)  # the listing is whole
        assert os.listdir(mnt / "faxes")  # and the user's own folders are untouched

        # An extension deleted while mounted disappears at the next listing.
        srv.admin("POST", "/_emulator/extensions/delete", {"id": carol.id})
        wait_until(lambda: names[carol.id] not in os.listdir(users) or None, "the deleted extension to go")
        assert len(os.listdir(users)) == len(store.company.extensions) - 1


def test_company_recordings_refresh_incrementally(start_emulator, tmp_path):
    """After the first full listing a refresh asks for the calls since the newest one
    seen (less a day), and a new recorded call appears in its month."""
    srv = start_emulator(**ROOMY)
    with _mount(srv, tmp_path, extra=["--recordings-ttl", "1"]):
        mnt = tmp_path / "m"
        recordings = mnt / "company" / "recordings"
        before = {n for m in os.listdir(recordings) for n in os.listdir(recordings / m)}
        added = srv.admin("POST", "/_emulator/calls", {"extension": "103", "from": "+14155550177", "minutesAgo": 5})

        def shown() -> set[str]:
            return {n for m in os.listdir(recordings) for n in os.listdir(recordings / m)}

        new = wait_until(lambda: shown() - before or None, "the new recording")
        assert [n.rsplit("_", 1)[1] for n in new] == [f"{added['recordingId']}.mp3"]
        assert next(iter(new)).split("_")[2:4] == ["x103", "from"]
        queries = [line.split("dateFrom=", 1)[1][:4] for line in mount_log(mnt).splitlines()
                   if "/account/~/call-log?" in line and "HTTP Request" in line]
        assert int(queries[0]) <= 2000  # the first listing: the whole history
        assert len(queries) >= 2 and all(int(year) >= dt.date.today().year - 1 for year in queries[1:])


def test_ten_thousand_extensions_list_page_by_page(start_emulator, tmp_path):
    srv = start_emulator(**ROOMY, extra_extensions=10_000)
    total = 10_000 + 8
    with _mount(srv, tmp_path):
        srv.reset_stats()
        users = os.listdir(tmp_path / "m" / "company" / "users")
        assert len(users) == len(set(users)) == total
        assert srv.stats()["requests"]["extension-list"] == -(-total // 1000)  # 1,000 a page
        assert "20000 Listed User 00000" in users and "29999 Listed User 09999" in users
