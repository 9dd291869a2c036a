"""A fleet of real mounts of one emulated account sharing one budget and one login through a
real redis-server (issue 18): `rcfs mount --shared-budget unix:///...` in a process per
mount, real `cp`, the emulator's own request log for what reached the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounthelp import expected_bytes
from conftest import build_config, spawn_emulator
from fusehelp import fuse_required, mount_log, mounted
from rcfs.emulator import seed

pytestmark = [fuse_required, pytest.mark.fuse, pytest.mark.slow]

WINDOW = 2.0
OPTIONS = dict(window=WINDOW, limit_heavy=4, hide_sizes=0.3)


def _args(srv):
    return dict(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)


@contextlib.contextmanager
def fleet(tmp_path: Path, srv, k: int, redis_url: str | None, first: int = 0):
    """`k` mounts (each its own process and state dir), sharing `redis_url` if given."""
    extra = ["--shared-budget", redis_url] if redis_url else []
    with contextlib.ExitStack() as stack:
        mounts = []
        for i in range(first, first + k):
            mnt = tmp_path / f"m{i}"
            stack.enter_context(mounted(mnt, state_dir=tmp_path / f"s{i}", extra_args=extra, **_args(srv)))
            mounts.append(mnt)
        yield mounts


def status(mnt: Path) -> dict:
    return json.loads(os.getxattr(mnt, "user.rc.status"))


def heavy(srv) -> list[dict]:
    return [e for e in srv.admin("GET", "/_emulator/requests")["requests"] if e["group"] == "heavy"]


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def copy_sets(mounts: list[Path], dest: Path, sets: list[list[str]]) -> list[subprocess.Popen]:
    """Start one `cp` per mount, each of its own set of /recordings."""
    procs = []
    for i, (mnt, names) in enumerate(zip(mounts, sets)):
        out = dest / f"copy{i}"
        out.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(["cp", *[str(mnt / "recordings" / n) for n in names], str(out)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 300.0) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err.decode()


def check_bytes(store, mounts: list[Path], dest: Path, sets: list[list[str]]) -> None:
    for i, (mnt, names) in enumerate(zip(mounts, sets)):
        for name in names:
            assert (dest / f"copy{i}" / name).read_bytes() == expected_bytes(store, mnt / "recordings" / name), name


@pytest.fixture
def account(tmp_path):
    srv = spawn_emulator(tmp_path, **OPTIONS)
    try:
        yield srv, seed.build_store(build_config(**OPTIONS))
    finally:
        srv.stop()


def test_four_mounts_copy_disjoint_recordings_in_one_budget(account, redis_server, tmp_path):
    srv, store = account
    with fleet(tmp_path, srv, 4, redis_server.url) as mounts:
        names = sorted(os.listdir(mounts[0] / "recordings"))
        assert len(names) == 12
        for mnt in mounts[1:]:
            assert sorted(os.listdir(mnt / "recordings")) == names
        sets = [names[i::4] for i in range(4)]
        finish(copy_sets(mounts, tmp_path / "out", sets))
        check_bytes(store, mounts, tmp_path / "out", sets)
        reports = [status(m) for m in mounts]
        shown = subprocess.run([sys.executable, "-m", "rcfs", "status", str(mounts[0])], capture_output=True,
                               text=True, timeout=60, check=True).stdout
        assert "redis ok  4 live mount(s)" in shown and "shared heavy" in shown
    log = heavy(srv)
    assert srv.stats()["rate_limited"] == 0 and all(e["status"] == 200 for e in log)
    assert all(r["rate_limited"] == 0 for r in reports)
    # What the service counted is what the four mounts sent, and never more than the
    # limit in one window of its own clock.
    assert len(log) == sum(r["groups"]["heavy"]["requests"] for r in reports)
    times = [e["t"] for e in log]
    assert all(times[i + 4] - times[i] >= WINDOW for i in range(len(times) - 4))
    # The fleet was seen as one: four live mounts, one login.
    assert all(r["fleet"]["live_mounts"] == 4 and r["fleet"]["healthy"] for r in reports)
    assert srv.stats()["requests"]["oauth-token"] == 1


def test_a_429_at_one_mount_holds_the_whole_fleet(account, redis_server, tmp_path):
    srv, store = account
    with fleet(tmp_path, srv, 4, redis_server.url) as mounts:
        names = sorted(os.listdir(mounts[0] / "recordings"))
        for mnt in mounts[1:]:
            os.listdir(mnt / "recordings")
        sets = [names[i::4] for i in range(4)]
        srv.configure(faults={"force_429": 1})
        # mount 0 meets the 429 on its first recording (and waits out the penalty) ...
        procs = copy_sets(mounts[:1], tmp_path / "out", sets[:1])
        redis = redis_server.client()
        wait_until(lambda: any(redis.scan_iter(match="rcfs:v1:*:pen:heavy")), what="the shared penalty")
        # ... and the three others, started while it stands, wait it out with it.
        others = [m for m in mounts[1:]]
        for i, mnt in enumerate(others, start=1):
            out = tmp_path / "out" / f"copy{i}"
            out.mkdir(parents=True)
            procs.append(subprocess.Popen(["cp", *[str(mnt / "recordings" / n) for n in sets[i]], str(out)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        finish(procs)
        check_bytes(store, mounts, tmp_path / "out", sets)
    log = heavy(srv)
    rejected = [i for i, e in enumerate(log) if e["status"] == 429]
    assert len(rejected) == 1 and log[rejected[0]]["forced"], log
    after = log[rejected[0] + 1:]
    assert after and all(e["status"] == 200 for e in after)
    assert after[0]["t"] - log[rejected[0]]["t"] >= WINDOW  # the penalty is one window


def _wait_shared(mounts, healthy: bool, timeout: float = 60.0):
    wait_until(lambda: all(status(m)["fleet"]["healthy"] is healthy for m in mounts), timeout,
               what=f"fleet healthy={healthy}")


def test_redis_stopped_mid_copy_then_back(account, redis_server, tmp_path):
    srv, store = account
    with fleet(tmp_path, srv, 3, redis_server.url) as mounts:
        names = sorted(os.listdir(mounts[0] / "recordings"))
        for mnt in mounts[1:]:
            os.listdir(mnt / "recordings")
        sets = [names[i::3] for i in range(3)]
        base = len(heavy(srv))
        procs = copy_sets(mounts, tmp_path / "out", sets)
        wait_until(lambda: len(heavy(srv)) >= base + 3, what="the copies to start")
        redis_server.stop()
        finish(procs)
        check_bytes(store, mounts, tmp_path / "out", sets)
        assert all(not status(m)["fleet"]["healthy"] for m in mounts)
        assert srv.stats()["rate_limited"] == 0
        # Redis back: every mount shares again (and sees the other two) ...
        redis_server.start()
        _wait_shared(mounts, True)
        wait_until(lambda: all(status(m)["fleet"]["live_mounts"] == 3 for m in mounts), what="3 live mounts")
        # ... and a second round, each mount copying what another one did (not in its
        # cache), goes through the shared log again without a 429.
        before = int(redis_server.client().info("stats")["total_commands_processed"])
        again = [sets[(i + 1) % 3] for i in range(3)]
        finish(copy_sets(mounts, tmp_path / "again", again))
        check_bytes(store, mounts, tmp_path / "again", again)
        reports = [status(m) for m in mounts]
        assert int(redis_server.client().info("stats")["total_commands_processed"]) > before
    assert srv.stats()["rate_limited"] == 0
    assert all(r["fleet"]["recoveries"] >= 1 and r["fleet"]["healthy"] for r in reports)


def test_redis_stalled_meets_the_deadline_then_the_fallback(account, redis_server, tmp_path):
    srv, store = account
    with fleet(tmp_path, srv, 2, redis_server.url) as mounts:
        names = sorted(os.listdir(mounts[0] / "recordings"))
        os.listdir(mounts[1] / "recordings")
        sets = [names[0::2], names[1::2]]
        wait_until(lambda: all(status(m)["fleet"]["live_mounts"] == 2 for m in mounts), what="2 live mounts")
        redis_server.pause()
        try:
            procs = copy_sets(mounts, tmp_path / "out", sets)
            finish(procs)
            check_bytes(store, mounts, tmp_path / "out", sets)
            reports = [status(m) for m in mounts]
        finally:
            redis_server.resume()
        assert all(not r["fleet"]["healthy"] and r["fleet"]["deadline_hits"] >= 1 for r in reports)
        assert srv.stats()["rate_limited"] == 0
        _wait_shared(mounts, True)


def test_six_mounts_are_one_session_under_the_session_cap(tmp_path, redis_server):
    options = dict(OPTIONS, session_cap=5)
    srv = spawn_emulator(tmp_path, **options)
    try:
        with fleet(tmp_path, srv, 6, redis_server.url) as mounts:
            for mnt in mounts:
                assert len(os.listdir(mnt / "faxes")) > 0
                assert len(os.listdir(mnt / "recordings")) == 12
            logs = [mount_log(m) for m in mounts]
        stats = srv.stats()
        assert stats["requests"]["oauth-token"] == 1  # one JWT login for the fleet
        assert stats["statuses"].get("401", 0) == 0  # nobody's session was ended
        sessions = {e["session"] for e in srv.admin("GET", "/_emulator/requests")["requests"]
                    if e["route"] != "oauth-token"}
        assert len(sessions) == 1
        assert not any("ended the session" in text for text in logs)
    finally:
        srv.stop()


def test_a_cat_on_one_mount_is_not_queued_behind_another_mounts_bulk_copy(tmp_path, redis_server):
    """Mount A copies 8 recordings with 4 cp at once (its queue is deep); a `cat` on mount
    B then waits behind what was already reserved and A's one waiter, not A's whole queue."""
    options = dict(OPTIONS, limit_heavy=2)
    srv = spawn_emulator(tmp_path, **options)
    try:
        with fleet(tmp_path, srv, 2, redis_server.url) as (a, b):
            names = sorted(os.listdir(a / "recordings"))
            os.listdir(b / "recordings")
            out = tmp_path / "bulk"
            out.mkdir()
            bulk = [subprocess.Popen(["cp", *[str(a / "recordings" / n) for n in names[i:8:4]], str(out)])
                    for i in range(4)]
            base = len(heavy(srv))
            wait_until(lambda: len(heavy(srv)) >= base + 3, what="the bulk copy to fill the budget")
            mark = len(heavy(srv))
            target = os.getxattr(b / "recordings" / names[9], "user.rc.id").decode()
            subprocess.run(["cat", str(b / "recordings" / names[9])], stdout=subprocess.DEVNULL, check=True,
                           timeout=120)
            for p in bulk:
                assert p.wait(timeout=300) == 0
        log = heavy(srv)
        mine = next(i for i, e in enumerate(log) if i >= mark and target in e["path"])
        ahead = [e for e in log[mark:mine] if e["route"] == "recording-content"]
        # Reserved or in flight when the cat began: at most the limit (2); then A's one waiter.
        assert len(ahead) <= 3, ahead
        assert srv.stats()["rate_limited"] == 0
    finally:
        srv.stop()
