"""The fleet's shared budget (issue 18) at the API level: several RingCentralClients in one
process, each with its own SharedBudget connection to a real redis-server, against the
emulator over loopback HTTP. (tests/test_fleet_mounts.py does the same with real mounts.)
"""

from __future__ import annotations

import contextlib

import pytest
import trio

from rcfs.api import Priority, RateLimited, RingCentralClient
from rcfs.api.shared_budget import FleetError, SharedBudget, parse_url, scope_of
from rcfs.settings import SettingsError, resolve_shared_budget
from test_api_emulator import FAST, creds, make_emu, served


@contextlib.asynccontextmanager
async def fleet(emu, url: str | None, k: int, **kw):
    """`k` clients of the emulated account; with `url`, sharing one budget through Redis."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(k):
            shared = None
            if url is not None:
                c = creds(emu)
                shared = await stack.enter_async_context(
                    SharedBudget(url, scope=scope_of(c.server_url, c.client_id, c.jwt), **kw))
            clients.append(await stack.enter_async_context(
                RingCentralClient(creds(emu), retry=FAST, timeout=10.0, shared=shared)))
        yield clients


def recording_urls(emu) -> list[str]:
    """The account's recordings, three times over (each fetch is one Heavy request)."""
    once = [emu.recording_content_uri(r.id) for r in sorted(emu.store.recordings.values(), key=lambda r: r.id)]
    return once * 3


async def fetch_all(clients, urls_per_client, *, tolerate=()):
    async def one(client, urls):
        for url in urls:
            try:
                chunk = await client.fetch(url, start=0, end=1023, priority=Priority.FOREGROUND)
            except tolerate:
                continue
            assert chunk.data

    async with trio.open_nursery() as nursery:
        for client, urls in zip(clients, urls_per_client):
            nursery.start_soon(one, client, urls)


def heavy_log(emu) -> list[dict]:
    return [e for e in emu.stats.log if e["group"] == "heavy"]


async def test_four_clients_share_one_heavy_budget_without_a_429(redis_server):
    emu = make_emu(window=1.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)[:16]
        async with fleet(emu, redis_server.url, 4) as clients:
            await fetch_all(clients, [urls[i::4] for i in range(4)])
            assert sum(c.stats.rate_limited for c in clients) == 0
    log = heavy_log(emu)
    assert len(log) == 16 and emu.stats.rate_limited == 0
    # At most 4 in any 1 s window of the emulator's own clock, and all of them answered.
    times = [e["t"] for e in log]
    assert all(times[i + 4] - times[i] >= 1.0 for i in range(len(times) - 4))
    # One login for the four clients.
    assert emu.stats.requests["oauth-token"] == 1


async def test_without_the_fleet_the_same_clients_meet_429s():
    """The control: the same load, each client pacing alone (today's behaviour)."""
    emu = make_emu(window=1.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)[:16]
        async with fleet(emu, None, 4) as clients:
            # (each client gives up after a few 429s: RateLimited)
            await fetch_all(clients, [urls[i::4] for i in range(4)], tolerate=RateLimited)
    assert emu.stats.rate_limited > 0


async def test_a_429_on_one_client_holds_every_client(redis_server):
    emu = make_emu(window=1.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)[:12]
        async with fleet(emu, redis_server.url, 3) as clients:
            await clients[0].fetch(urls[0], start=0, end=10)  # learn the group
            emu.config.faults.force_429 = 1
            redis = redis_server.client()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    # client 0 meets the 429 (and resends after the penalty) ...
                    nursery.start_soon(clients[0].fetch, urls[1], 0, 10)
                    while not any(redis.scan_iter(match="rcfs:v1:*:pen:heavy")):
                        await trio.sleep(0.005)
                    # ... the others start while the penalty stands: they wait it out too
                    nursery.start_soon(fetch_all, clients[1:], [urls[2:7], urls[7:12]])
    log = heavy_log(emu)
    rejected = [i for i, e in enumerate(log) if e["status"] == 429]
    assert len(rejected) == 1 and log[rejected[0]]["forced"]  # the forced one, and no other
    after = log[rejected[0] + 1:]
    assert len(after) == 11 and all(e["status"] == 200 for e in after)
    # Nobody sent before the penalty (one window) was over: the emulator would have said 429.
    assert after[0]["t"] - log[rejected[0]]["t"] >= 1.0


async def test_redis_stopped_mid_way_falls_back_to_shares_then_shares_again(redis_server):
    emu = make_emu(window=1.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)
        async with fleet(emu, redis_server.url, 2) as clients:
            await fetch_all(clients, [urls[0:4], urls[4:8]])
            assert all(c.governor.shared.live_mounts == 2 for c in clients)
            redis_server.stop()
            await fetch_all(clients, [urls[8:14], urls[14:20]])
            assert not any(c.governor.shared.healthy for c in clients)
            redis_server.start()
            with trio.fail_after(30):
                while not all(c.governor.shared.healthy for c in clients):
                    await trio.sleep(0.1)
            await fetch_all(clients, [urls[20:24], urls[24:28]])
            assert all(c.governor.shared.recoveries >= 1 for c in clients)
            assert all(c.stats.rate_limited == 0 for c in clients)
    assert emu.stats.rate_limited == 0
    assert len(heavy_log(emu)) == 28


async def test_redis_stalled_meets_the_deadline_then_the_fallback(redis_server):
    emu = make_emu(window=1.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)
        async with fleet(emu, redis_server.url, 2, timeout=0.3) as clients:
            await fetch_all(clients, [urls[0:2], urls[2:4]])
            redis_server.pause()
            try:
                await fetch_all(clients, [urls[4:8], urls[8:12]])
                for c in clients:
                    assert not c.governor.shared.healthy
                    assert c.governor.shared.deadline_hits >= 1
            finally:
                redis_server.resume()
            with trio.fail_after(30):
                while not all(c.governor.shared.healthy for c in clients):
                    await trio.sleep(0.1)
    assert emu.stats.rate_limited == 0


def test_urls_without_passwords(tmp_path):
    assert parse_url("redis://127.0.0.1:6390/2") == "redis://127.0.0.1:6390/2"
    assert parse_url("unix:///run/redis/redis.sock").startswith("unix://")
    assert parse_url("rediss://cache.example:6380/0").startswith("rediss://")
    for bad in ("redis://:secret@host:6379/0", "http://host", "unix://", "redis:///0"):
        with pytest.raises(FleetError):
            parse_url(bad)
    cfg = tmp_path / "config.toml"
    cfg.write_text('shared_budget = "redis://10.0.0.5:6379/1"\nshared_budget_password = "pw"\n')
    cfg.chmod(0o600)
    assert resolve_shared_budget(flag=None, config_path=cfg, env={}) == ("redis://10.0.0.5:6379/1", "pw")
    assert resolve_shared_budget(flag="unix:///r.sock", config_path=cfg,
                                 env={"RCFS_REDIS_PASSWORD": "envpw"}) == ("unix:///r.sock", "envpw")
    with pytest.raises(SettingsError, match="no password in the URL"):
        resolve_shared_budget(flag="redis://u:pw@h/0", config_path=cfg, env={})


async def test_headers_from_a_stranger_correct_the_shared_log(redis_server):
    """A client outside the fleet (a script with the same app and user) spent most of the
    window: the first fleet answer says so (X-Rate-Limit-Remaining 0), and the whole fleet
    waits instead of meeting a 429."""
    emu = make_emu(window=2.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)
        async with fleet(emu, None, 1) as (stranger,), fleet(emu, redis_server.url, 2) as (a, b):
            await a.fetch(urls[0], start=0, end=10)  # the fleet learns the group (1 used)
            await a.governor.shared.flush()
            for url in urls[1:3]:
                await stranger.fetch(url, start=0, end=10)  # 3 used, 2 of them unknown to the fleet
            await a.fetch(urls[3], start=0, end=10)  # 4 used: remaining 0
            await a.governor.shared.flush()
            with trio.fail_after(30):
                await b.fetch(urls[4], start=0, end=10)
    log = heavy_log(emu)
    assert [e["status"] for e in log] == [200] * 5 and emu.stats.rate_limited == 0
    assert log[4]["t"] - log[0]["t"] >= 2.0  # b waited for the window, not for its own log


def test_fstab_option_and_status_lines():
    from rcfs import mounthelper, status

    _, args = mounthelper.parse(["none", "/srv/rc", "-o", "allow_other,shared_budget=unix:///run/redis/r.sock"])
    assert args[args.index("--shared-budget") + 1] == "unix:///run/redis/r.sock"
    report = {"pid": 1, "uptime": 3, "requests": 5, "rate_limited": 0, "retries": 0, "groups": {},
              "cache": {"bytes": 0, "limit": 1, "blocks": 0, "hits": 0, "misses": 0, "joined": 0, "hit_rate": None},
              "bytes_fetched": 0, "bytes_received": 0, "downloads": [],
              "fleet": {"url": "unix:/run/redis/r.sock", "healthy": False, "live_mounts": 3, "calls": 10,
                        "failures": 2, "deadline_hits": 1, "recoveries": 0, "last_error": "no answer within 0.5 s",
                        "groups": {"heavy": {"used": 7, "limit": 10, "window": 60.0, "blocked_for": 12.5}},
                        "mounts": [{"host": "ws1", "pid": 42, "requests": 9}]}}
    text = status.render(report, "/srv/rc")
    assert "redis DOWN (no answer within 0.5 s), pacing alone" in text and "3 live mount(s)" in text
    assert "shared heavy     7/10 used per 60 s  blocked 12.5 s" in text
    assert "ws1 pid 42  requests 9" in text


def token_requests(emu) -> list[dict]:
    return [e for e in emu.stats.log if e["route"] == "oauth-token"]


async def test_one_mount_refreshes_for_the_fleet(redis_server):
    """The access token runs out: one refresh for the three clients, whose old tokens the
    refresh ended at once (their 401s take the new pair), and no login."""
    emu = make_emu(window=1.0, limit_auth=50, access_token_ttl=20)
    async with served(emu):
        async with fleet(emu, redis_server.url, 3) as clients:
            for c in clients:
                await c.list_messages("Fax")
            assert len({c.auth.current() for c in clients}) == 1
            await trio.sleep(19.0)  # past min(60 s, 10 % of 20 s) before expiry
            async with trio.open_nursery() as nursery:
                for c in clients:
                    nursery.start_soon(c.list_messages, "Fax")
            assert len({c.auth.current() for c in clients}) == 1
            assert sum(c.auth.refreshes for c in clients) == 1
            assert sum(c.auth.logins for c in clients) == 1
    assert len(token_requests(emu)) == 2 and len(emu.tokens.sessions) == 1


async def test_a_refused_refresh_is_one_login_for_the_fleet(redis_server):
    emu = make_emu(window=1.0, limit_auth=50)
    async with served(emu):
        async with fleet(emu, redis_server.url, 3) as clients:
            for c in clients:
                await c.list_messages("Fax")
            emu.tokens.end_sessions("all")  # an admin logout: every token of the session dies
            async with trio.open_nursery() as nursery:
                for c in clients:
                    nursery.start_soon(c.list_messages, "Fax")
            assert len({c.auth.current() for c in clients}) == 1
            assert sum(c.auth.logins for c in clients) == 2  # the first one, and one after the logout
    # login, the refused refresh, one login: not one refresh and login per client
    assert len(token_requests(emu)) == 3 and len(emu.tokens.sessions) == 1


async def test_a_client_started_while_redis_is_down_paces_at_its_share(tmp_path):
    """Redis down from the start: the fleet's size last seen (kept in the state dir) still
    divides the limit."""
    memo = tmp_path / "fleet.json"
    memo.write_text('{"live_mounts": 4}')
    emu = make_emu(window=1.0, limit_heavy=4, limit_auth=50)
    async with served(emu):
        urls = recording_urls(emu)
        c = creds(emu)
        async with SharedBudget(f"unix://{tmp_path}/no-redis.sock", memo=memo,
                                scope=scope_of(c.server_url, c.client_id, c.jwt)) as shared:
            assert not shared.healthy and shared.live_mounts == 4
            async with RingCentralClient(c, retry=FAST, timeout=10.0, shared=shared) as client:
                await client.fetch(urls[0], start=0, end=10)  # learns the group: limit 4
                for url in urls[1:4]:
                    await client.fetch(url, start=0, end=10)
    log = heavy_log(emu)
    assert [e["status"] for e in log] == [200] * 4
    # A share of 4 / 4 = 1 per window: each request a window after the one before.
    assert all(b["t"] - a["t"] >= 1.0 for a, b in zip(log, log[1:]))
