"""/greetings on a real mount: greetings read back as the emulator serves them, copying
WAV/MP3 over one replaces what the rule plays, refusals send nothing, a crash during the
upload neither loses nor doubles it. What the emulator serves is read over its own API
(answering rule -> greeting metadata -> content), never through the mount."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

import mime_samples
from outboxhelp import wait_until as wait_for
from fusehelp import fuse_required, mount_log, mounted
from rcfs.emulator import greetings as emu_greetings

pytestmark = fuse_required

BUSINESS, AFTER, CUSTOM = emu_greetings.BUSINESS_HOURS_RULE, emu_greetings.AFTER_HOURS_RULE, emu_greetings.CUSTOM_RULE
ROOMY = dict(limit_heavy=1000, limit_medium=1000, limit_light=1000)
EXT = "/restapi/v1.0/account/~/extension/~"


def args_for(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


class Served:
    """What the emulator plays for a rule and greeting type, asked over its API."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.headers = {"Authorization": f"Bearer {srv.token()}"}

    def rules(self) -> dict[str, dict]:
        r = httpx.get(self.srv.platform + EXT + "/answering-rule", params={"view": "Detailed", "perPage": 1000},
                      headers=self.headers, timeout=10)
        r.raise_for_status()
        return {rule["id"]: rule for rule in r.json()["records"]}

    def greeting(self, rule_id: str, gtype: str) -> tuple[str, str, bytes] | None:
        """(greeting id, content type, bytes) of the rule's custom greeting, None for a preset."""
        rule = self.rules()[rule_id]
        entry = next(g for g in rule["greetings"] if g["type"] == gtype)
        if "custom" not in entry:
            return None
        meta = httpx.get(self.srv.platform + EXT + f"/greeting/{entry['custom']['id']}", headers=self.headers,
                         timeout=10).json()
        content = httpx.get(meta["contentUri"], headers=self.headers, timeout=10)
        content.raise_for_status()
        return meta["id"], meta["contentType"], content.content


def state_of(path: Path) -> str:
    try:
        return os.getxattr(path, "user.rc.state").decode()
    except OSError:
        return ""


def write_errno(path: Path, data: bytes, chunk: int = 128 * 1024) -> int:
    """Write `data` to `path` like cp does; the errno the writer got (0: accepted)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        return exc.errno
    code = 0
    try:
        for i in range(0, len(data), chunk):
            os.write(fd, data[i:i + chunk])
    except OSError as exc:
        code = exc.errno
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            code = code or exc.errno
    return code


def cp(src: Path, dst: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cp", str(src), str(dst)], capture_output=True, text=True, timeout=120)


def test_greetings_read_back_byte_identical(start_emulator, tmp_path):
    srv = start_emulator(**ROOMY)
    served = Served(srv)
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **args_for(srv)):
        root = mnt / "greetings"
        layout = {d.name: sorted(f.name for f in d.iterdir()) for d in root.iterdir() if d.is_dir()}
        assert layout == {"business-hours": ["Voicemail.mp3"], "after-hours": ["Voicemail.wav"],
                          "Family & VIP": ["Introductory.wav", "Voicemail.mp3"]}
        checked = 0
        for folder in root.iterdir():
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                rule_id = os.getxattr(f, "user.rc.rule_id").decode()
                gtype = os.getxattr(f, "user.rc.greeting_type").decode()
                gid, ctype, data = served.greeting(rule_id, gtype)
                assert os.getxattr(f, "user.rc.greeting_id").decode() == gid
                assert f.read_bytes() == data and f.stat().st_size == len(data)
                assert f.suffix == {"audio/mpeg": ".mp3", "audio/wav": ".wav"}[ctype]
                checked += 1
        assert checked == 4
        assert "no uploads yet" in (root / "STATUS.txt").read_text()


def test_copying_wav_and_mp3_over_greetings_changes_what_the_rule_plays(start_emulator, tmp_path):
    srv = start_emulator(**ROOMY)
    served = Served(srv)
    wav = mime_samples.write_sample(tmp_path, "wav", "hello.wav")
    mp3 = mime_samples.write_sample(tmp_path, "mp3", "music.mp3")
    mnt = tmp_path / "m"
    old_business = served.greeting(BUSINESS, "Voicemail")
    assert old_business[1] == "audio/mpeg"
    assert served.greeting(AFTER, "HoldMusic") is None  # a preset plays
    srv.reset_stats()
    with mounted(mnt, state_dir=tmp_path / "s", **args_for(srv)):
        g = mnt / "greetings"
        # WAV audio over an .mp3 file: the rule's greeting becomes that WAV.
        result = cp(wav, g / "business-hours" / "Voicemail.mp3")
        assert result.returncode == 0, result.stderr
        # MP3 into a type that played a preset, under the documented name (any case).
        result = cp(mp3, g / "after-hours" / "holdmusic.MP3")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: (g / "business-hours" / "Voicemail.wav").exists()
                 and state_of(g / "business-hours" / "Voicemail.wav") == "applied", "the WAV greeting applied")
        wait_for(lambda: state_of(g / "after-hours" / "HoldMusic.mp3") == "applied", "the MP3 greeting applied")
        assert sorted(os.listdir(g / "business-hours")) == ["Voicemail.wav"]
        assert sorted(os.listdir(g / "after-hours")) == ["HoldMusic.mp3", "Voicemail.wav"]
        assert (g / "business-hours" / "Voicemail.wav").read_bytes() == wav.read_bytes()
        assert (g / "after-hours" / "HoldMusic.mp3").read_bytes() == mp3.read_bytes()
        status = (g / "STATUS.txt").read_text()
        assert "2 applied" in status and "business-hours/Voicemail.mp3" in status
        new_id = os.getxattr(g / "business-hours" / "Voicemail.wav", "user.rc.greeting_id").decode()
    gid, ctype, data = served.greeting(BUSINESS, "Voicemail")
    assert (gid, ctype, data) == (new_id, "audio/wav", wav.read_bytes()) and gid != old_business[0]
    gid, ctype, data = served.greeting(AFTER, "HoldMusic")
    assert (ctype, data) == ("audio/mpeg", mp3.read_bytes())
    assert srv.stats()["requests"]["greeting-create"] == 2  # one upload each, no more


def test_wrong_type_too_big_and_empty_are_refused_and_nothing_is_sent(start_emulator, tmp_path):
    srv = start_emulator(**ROOMY)
    served = Served(srv)
    before = {(r, t): served.greeting(r, t) for r, t in ((BUSINESS, "Voicemail"), (AFTER, "Voicemail"))}
    jpeg = mime_samples.write_sample(tmp_path, "jpeg", "photo.mp3")  # a JPEG renamed .mp3
    big = tmp_path / "big.wav"
    big.write_bytes(mime_samples.build("wav") + b"\0" * (21 * 1000 * 1000))  # real WAV header, 21 MB
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    srv.reset_stats()
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **args_for(srv)):
        g = mnt / "greetings"
        target = g / "business-hours" / "Voicemail.mp3"
        result = cp(jpeg, target)
        assert result.returncode != 0 and os.strerror(errno.EMEDIUMTYPE) in result.stderr, result.stderr
        assert write_errno(target, jpeg.read_bytes()) == errno.EMEDIUMTYPE
        # Under the other extension (the file is renamed while written): refused, and the
        # folder is as before, without a trace of the refused name.
        assert write_errno(g / "after-hours" / "Voicemail.mp3", jpeg.read_bytes()) == errno.EMEDIUMTYPE
        assert sorted(os.listdir(g / "after-hours")) == ["Voicemail.wav"]
        assert not (g / "after-hours" / "Voicemail.mp3").exists()
        result = cp(big, g / "after-hours" / "Voicemail.wav")
        assert result.returncode != 0 and os.strerror(errno.EFBIG) in result.stderr, result.stderr
        assert write_errno(g / "after-hours" / "Voicemail.wav", big.read_bytes()) == errno.EFBIG
        assert write_errno(target, empty.read_bytes()) == errno.EINVAL
        # A name that is no greeting type of the rule: refused at create.
        assert write_errno(g / "business-hours" / "Company.mp3", mime_samples.build("mp3")) == errno.EINVAL
        # The folder shows the greetings the rules still play, and nothing is waiting.
        assert sorted(os.listdir(g / "business-hours")) == ["Voicemail.mp3"]
        assert target.read_bytes() == before[(BUSINESS, "Voicemail")][2]
        assert (g / "after-hours" / "Voicemail.wav").read_bytes() == before[(AFTER, "Voicemail")][2]
        assert "no uploads yet" in (g / "STATUS.txt").read_text()
        log = mount_log(mnt)
        assert "cannot be sent as a greeting" in log and "over the 20000000-byte limit of a greeting" in log
    assert srv.stats()["requests"].get("greeting-create", 0) == 0
    assert {k: served.greeting(*k) for k in before} == before
    assert not any((tmp_path / "s").rglob("greetings-spool/data/*"))


@pytest.mark.parametrize("phase", ["stored, answer pending", "before the upload"])
def test_kill_during_upload_then_remount_uploads_exactly_once(start_emulator, tmp_path, phase):
    """kill -9 of rcfs while the emulator holds the upload's answer (it has stored the
    greeting: the remount must find it and not upload again), or while the upload is
    still queued behind a slow answer of the emulator (nothing reached it: uploaded once
    after the remount)."""
    srv = start_emulator(**ROOMY, faults={"send_answer_delay_ms": 60_000})
    served = Served(srv)
    wav = mime_samples.write_sample(tmp_path, "wav", "hello.wav")
    old = served.greeting(BUSINESS, "Voicemail")
    state = tmp_path / "s"
    srv.reset_stats()
    with mounted(tmp_path / "a", state_dir=state, **args_for(srv)) as proc:
        target = tmp_path / "a" / "greetings" / "business-hours" / "Voicemail.mp3"
        if phase == "before the upload":
            srv.configure(faults={"send_force_503": 1000})  # every upload bounces: stays queued
            assert cp(wav, target).returncode == 0
            wait_for(lambda: srv.stats()["requests"].get("greeting-create", 0) >= 1, "an upload attempt")
            assert served.greeting(BUSINESS, "Voicemail") == old
        else:
            assert cp(wav, target).returncode == 0  # close succeeded: journalled
            # The emulator stored it and now sits on the answer; rcfs waits in `sending`.
            wait_for(lambda: served.greeting(BUSINESS, "Voicemail")[0] != old[0], "the upload stored")
            assert state_of(target) == "sending"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    attempts_before = srv.stats()["requests"].get("greeting-create", 0)
    srv.configure(faults={"send_answer_delay_ms": 0, "send_force_503": 0})
    with mounted(tmp_path / "b", state_dir=state, **args_for(srv)):
        g = tmp_path / "b" / "greetings"
        wait_for(lambda: (g / "business-hours" / "Voicemail.wav").exists()
                 and state_of(g / "business-hours" / "Voicemail.wav") == "applied", "the greeting applied")
        assert (g / "business-hours" / "Voicemail.wav").read_bytes() == wav.read_bytes()
        assert "1 applied" in (g / "STATUS.txt").read_text()
    gid, ctype, data = served.greeting(BUSINESS, "Voicemail")
    assert (ctype, data) == ("audio/wav", wav.read_bytes())
    creates = srv.stats()["requests"].get("greeting-create", 0)
    if phase == "before the upload":
        assert creates == attempts_before + 1  # the one that got through
    else:
        assert creates == 1  # reconciled with the rule: not uploaded a second time
        assert "found in the answering rule); not sending it again" in mount_log(tmp_path / "b")
    # Nothing is left in the spool once applied.
    assert not any(state.rglob("greetings-spool/items/*.json"))


def test_a_full_spool_disk_is_enospc_and_nothing_is_sent(start_emulator, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the state dir needs root")
    srv = start_emulator(**ROOMY)
    state = tmp_path / "small"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(state)], check=True)
    try:
        srv.reset_stats()
        mnt = tmp_path / "m"
        with mounted(mnt, state_dir=state, **args_for(srv)):
            audio = mime_samples.build("wav") + b"\0" * (5 * 1000 * 1000)  # a WAV bigger than the disk
            target = mnt / "greetings" / "business-hours" / "Voicemail.mp3"
            assert write_errno(target, audio) == errno.ENOSPC
            assert "the spool's disk is full" in mount_log(mnt)
            assert sorted(os.listdir(target.parent)) == ["Voicemail.mp3"]
            assert "no uploads yet" in (mnt / "greetings" / "STATUS.txt").read_text()
        assert srv.stats()["requests"].get("greeting-create", 0) == 0
        assert not any(state.rglob("greetings-spool/data/*"))  # the partial bytes are gone
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True)


def test_a_rate_limited_upload_is_retried_and_applied_once(start_emulator, tmp_path):
    """The outbox's rate-limit handling: a 429 on the upload (with Retry-After) is waited
    out and sent again; the rule ends up with the audio, stored once."""
    srv = start_emulator(**ROOMY, window=2.0, faults={"send_force_429": 1})
    served = Served(srv)
    mp3 = mime_samples.write_sample(tmp_path, "mp3", "music.mp3")
    srv.reset_stats()
    mnt = tmp_path / "m"
    with mounted(mnt, state_dir=tmp_path / "s", **args_for(srv)):
        target = mnt / "greetings" / "after-hours" / "Voicemail.mp3"
        assert cp(mp3, target).returncode == 0
        wait_for(lambda: state_of(target) == "applied", "the upload applied after the 429")
        assert target.read_bytes() == mp3.read_bytes()
    assert srv.stats()["requests"]["greeting-create"] == 2  # the refused one, then the one stored
    assert srv.stats()["statuses"].get("429", 0) == 1
    assert served.greeting(AFTER, "Voicemail")[1:] == ("audio/mpeg", mp3.read_bytes())


def test_rsync_and_gio_replace_a_greeting_through_a_temporary_file(start_emulator, tmp_path):
    """Issue 20 item 6: rsync writes `.NAME.XXXXXX` and renames it over NAME; GIO's
    replace (`gio copy`, `gio save`, so Nautilus) writes `.goutputstream-XXXXXX` and
    renames it over the greeting. Each is one upload that replaces what the rule plays."""
    gio = shutil.which("gio")
    assert gio, "gio (libglib2.0-bin) is installed by scripts/_setup.sh"
    srv = start_emulator(**ROOMY)
    served = Served(srv)
    wav = mime_samples.write_sample(tmp_path, "wav", "hello.wav")
    mp3 = mime_samples.write_sample(tmp_path, "mp3", "music.mp3")
    mnt = tmp_path / "m"
    srv.reset_stats()
    with mounted(mnt, state_dir=tmp_path / "s", **args_for(srv)):
        g = mnt / "greetings"
        result = subprocess.run(["rsync", str(wav), str(g / "business-hours" / "Voicemail.mp3")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: state_of(g / "business-hours" / "Voicemail.wav") == "applied", "the rsync'd WAV applied")
        assert sorted(os.listdir(g / "business-hours")) == ["Voicemail.wav"]
        result = subprocess.run([gio, "copy", str(mp3), str(g / "after-hours" / "Voicemail.wav")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: state_of(g / "after-hours" / "Voicemail.mp3") == "applied", "the gio copy applied")
        with open(wav, "rb") as fh:
            result = subprocess.run([gio, "save", str(g / "after-hours" / "Voicemail.mp3")], stdin=fh,
                                    capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: state_of(g / "after-hours" / "Voicemail.wav") == "applied"
                 and served.greeting(AFTER, "Voicemail")[2] == wav.read_bytes(), "the gio save applied")
        assert sorted(os.listdir(g / "after-hours")) == ["Voicemail.wav"]
        assert not [n for n in os.listdir(g / "business-hours") + os.listdir(g / "after-hours") if n.startswith(".")]
    assert served.greeting(BUSINESS, "Voicemail")[1:] == ("audio/wav", wav.read_bytes())
    assert srv.stats()["requests"]["greeting-create"] == 3  # one upload each, no more
