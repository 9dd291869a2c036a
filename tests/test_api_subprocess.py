"""The API client against the emulator as a separate process (`python -m rcfs.emulator`),
the way a mount meets it: real loopback HTTP, counters read back over the admin API.
"""

from __future__ import annotations

import math

import trio

from rcfs.api import Credentials, Priority, RetryPolicy, RingCentralClient, TokenStore

FAST = RetryPolicy(attempts=4, base_delay=0.02, max_delay=0.1, total=10.0)


def connect(srv, **kw) -> RingCentralClient:
    creds = Credentials(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt)
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 10.0)
    return RingCentralClient(creds, **kw)


async def test_remount_reuses_stored_tokens_and_reads_are_paced(start_emulator, tmp_path):
    srv = start_emulator(window=1, limit_medium=4)
    store = TokenStore(tmp_path / "state" / "tokens.json")
    async with connect(srv, token_store=store) as rc:
        faxes = await rc.list_messages("Fax")
    att = max((m["attachments"][0] for m in faxes), key=lambda a: a.get("size", 0))
    async with connect(srv, token_store=store) as rc:  # "remount": no second login
        whole = await rc.fetch(att["uri"])
        data = whole.data
        assert whole.total == len(data) > 0
        pieces: dict[int, bytes] = {}

        async def read(i: int) -> None:
            step = math.ceil(len(data) / 8)
            chunk = await rc.fetch(att["uri"], i * step, min(len(data), (i + 1) * step) - 1,
                                   priority=Priority.FOREGROUND if i % 2 else Priority.READAHEAD)
            pieces[chunk.start] = chunk.data

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(8):  # twice the Medium limit
                nursery.start_soon(read, i)
        elapsed = trio.current_time() - start
        assert b"".join(pieces[k] for k in sorted(pieces)) == data
        assert rc.stats.rate_limited == 0
    stats = srv.stats()
    assert stats["requests"]["oauth-token"] == 1
    assert stats["rate_limited"] == 0
    assert elapsed >= 2.0  # 9 Medium requests at 4 per second need three windows


async def test_forced_429_blocks_the_group_until_retry_after(start_emulator):
    srv = start_emulator(window=1)
    async with connect(srv) as rc:
        await rc.list_messages("VoiceMail")
        srv.configure(faults={"force_429": 1})
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rc.list_messages, "VoiceMail")
            with trio.fail_after(5):
                while rc.stats.rate_limited == 0:
                    await trio.sleep(0.01)
            # The group is now blocked: these must wait instead of being rejected too.
            for _ in range(3):
                nursery.start_soon(rc.list_messages, "VoiceMail")
            await trio.sleep(0.3)
            assert rc.stats.requests["light"] == 2  # nothing sent during the penalty
        assert trio.current_time() - start >= 1.0  # Retry-After: 1
        assert rc.stats.rate_limited == 1
    assert srv.stats()["rate_limited"] == 1
