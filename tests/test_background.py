"""`rcfs.background` over the real client and the emulator on loopback HTTP: what the
background learner asks for, in which order, and how it shares the rate limits."""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path

import trio

from rcfs.api import Credentials, RetryPolicy, RingCentralClient
from rcfs.api.governor import Group
from rcfs.background import SHARE, BackgroundLearner
from rcfs.emulator import seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.server import serve
from rcfs.folders.media import iter_files
from rcfs.fs import Operations, reader_priority
from rcfs.mount import MountOptions, build_owners
from rcfs.reader import Reader
from rcfs.spool import Spool
from rcfs.state import StateStore
from rcfs.tree import File, Tree

RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, total=10.0)


async def _with_learner(tmp_path: Path, test, **config):
    cfg = EmulatorConfig(window=0.5, **config)
    emu = Emulator(cfg, seed.build_store(cfg))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, emu, host="127.0.0.1"))
        creds = Credentials(emu.platform_base, cfg.client_id, cfg.client_secret, cfg.jwt, media_url=emu.media_base)
        async with RingCentralClient(creds, retry=RETRY, timeout=5.0) as client:
            reader = Reader(client)
            await nursery.start(reader.run)
            tree = Tree(uid=0, gid=0)
            state = StateStore(tmp_path / "state.json")
            opts = MountOptions(mountpoint=tmp_path / "m", credentials=creds, state_dir=tmp_path,
                                since=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
            owners = build_owners(opts, tree, client, reader, state, spool=Spool(tmp_path / "outbox"))
            ops = Operations(tree, owners, state)  # not mounted: no kernel to invalidate
            learned: list[str] = []

            def on_size(key: str, size: int) -> None:
                learned.append(key)
                ops.size_learned(key, size)

            media = [o for name, o in owners.items()
                     if name in ("faxes", "voicemail", "recordings", "mms", "greetings")]
            for owner in media:
                await owner.refresh(owner.folder)
            learner = BackgroundLearner(client, media, state, on_size=on_size,
                                        on_content_type=ops.content_type_learned, tick=0.05)
            try:
                await test(emu, client, learner, media, learned, state)
            finally:
                nursery.cancel_scope.cancel()


def test_learns_every_unknown_size_and_type_newest_first_within_half_the_limit(tmp_path):
    async def test(emu, client, learner, media, learned, state):
        unknown = learner.pending()  # (owner, file, what to probe)
        assert unknown and len({src.key for _, _, src in unknown}) == len(unknown)
        by_group: dict[Group, list[tuple[File, object]]] = {}
        for _, f, src in unknown:
            by_group.setdefault(client.budget_for(src.url).group, []).append((f, src))
        peak: dict[Group, int] = {}

        async def watch_budget():
            while True:
                for g in by_group:
                    peak[g] = max(peak.get(g, 0), client.governor.budget(g).used)
                await trio.sleep(0.005)

        async with trio.open_nursery() as inner:
            inner.start_soon(watch_budget)
            inner.start_soon(learner.run)
            with trio.fail_after(120):
                while learner.pending_counts() != {"sizes": 0, "types": 0}:
                    await trio.sleep(0.05)
            inner.cancel_scope.cancel()
        # One probe per file, and within each group newest first.
        assert sorted(learned) == sorted(src.key for _, f, src in unknown if f.size is not None)
        assert sum(learner.stats.requests.values()) == len(unknown)
        for group, files in by_group.items():
            order = [k for k in learned if k in {src.key for _, src in files}]
            assert order == [src.key for f, src in sorted(files, key=lambda t: t[0].mtime, reverse=True)], group
            limit = client.governor.budget(group).limit
            assert peak[group] <= max(1, int(limit * SHARE)), (group, peak[group], limit)
        # Learned facts are the real ones, and recordings are named by their real type.
        for owner in media:
            for node in iter_files(owner.folder):
                if node.key.startswith("rec:"):
                    rec = emu.store.recordings[node.key[4:]]
                    assert node.size == rec.media.size
                    assert state.content_types[node.key] == rec.media.content_type
                    assert node.name.endswith(".wav" if "wav" in rec.media.content_type else ".mp3")
        assert client.stats.rate_limited == 0

    trio.run(partial(_with_learner, tmp_path, test, limit_heavy=6))


def test_greeting_sizes_are_learned_in_the_background_without_opening_them(tmp_path):
    """A greeting's size is not in the rule's JSON: shown provisionally until learned.
    The learner probes each greeting a rule plays, once, and the file shows its size."""
    async def test(emu, client, learner, media, learned, state):
        greetings = next(o for o in media if o.name == "greetings")
        slots = [f for f in iter_files(greetings.folder) if f.key.startswith("greeting:")]
        assert slots and all(f.size is None for f in slots)  # (the listing does not say)
        async with trio.open_nursery() as inner:
            inner.start_soon(learner.run)
            with trio.fail_after(120):
                while learner.pending_counts() != {"sizes": 0, "types": 0}:
                    await trio.sleep(0.05)
            inner.cancel_scope.cancel()
        for f in slots:
            greeting_id = greetings.xattrs(f)["user.rc.greeting_id"]
            assert f.size == emu.store.greetings[greeting_id].media.size, f.name
            assert greetings.presented_size(f) == f.size
            assert state.sizes[f"greeting:{greeting_id}"] == f.size  # kept for the next mount
        assert sorted(k for k in learned if k.startswith("greeting:")) == sorted(
            f"greeting:{greetings.xattrs(f)['user.rc.greeting_id']}" for f in slots)
        assert emu.stats.requests["greeting-content"] == len(slots)  # one probe each

    trio.run(partial(_with_learner, tmp_path, test, limit_heavy=6))


def test_stops_the_moment_another_request_uses_the_group(tmp_path):
    async def test(emu, client, learner, media, learned, state):
        async with trio.open_nursery() as inner:
            inner.start_soon(learner.run)
            with trio.fail_after(60):
                while not learner.stats.requests.get("heavy"):
                    await trio.sleep(0.01)
            # A foreground request in the same group (a listing of the call log).
            await client.list_call_log(date_from=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
            assert not learner.may_probe(Group.HEAVY)  # seen at once...
            sent = learner.stats.requests["heavy"]
            # ...and still held back for the rest of that window (well inside it).
            await trio.sleep(client.governor.budget(Group.HEAVY).window / 4)
            assert learner.stats.requests["heavy"] == sent  # nothing new while the group was busy
            assert learner.pending_counts()["types"] > 0  # (there was work left to do)
            inner.cancel_scope.cancel()

    trio.run(partial(_with_learner, tmp_path, test, limit_heavy=6))
