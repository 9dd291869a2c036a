"""`rcfs.greetings_model` and the client's answering-rule / greeting calls against the
emulator on loopback HTTP, content through the real Reader."""

from __future__ import annotations

import errno
from contextlib import asynccontextmanager
from functools import partial
from typing import AsyncIterator

import pytest
import trio

from rcfs.api import Credentials, RetryPolicy, RingCentralClient
from rcfs.api.client import classify
from rcfs.api.governor import Group
from rcfs.emulator import greetings, media, seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.server import serve
from rcfs.greetings_model import GreetingError, GreetingsModel, folder_names, greeting_file_name
from rcfs.reader import Reader

KiB, MiB = 2**10, 2**20
RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, total=10.0)


@asynccontextmanager
async def stack() -> AsyncIterator[tuple[Emulator, RingCentralClient, Reader]]:
    cfg = EmulatorConfig(limit_heavy=1000, limit_medium=1000)
    emu = Emulator(cfg, seed.build_store(cfg))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, emu, host="127.0.0.1"))
        creds = Credentials(emu.platform_base, cfg.client_id, cfg.client_secret, cfg.jwt, media_url=emu.media_base)
        async with RingCentralClient(creds, retry=RETRY, timeout=10.0) as rc:
            reader = Reader(rc, block_size=256 * KiB, small_file_max=2 * MiB, read_timeout=20.0)
            await nursery.start(reader.run)
            try:
                yield emu, rc, reader
            finally:
                nursery.cancel_scope.cancel()


async def read_all(reader: Reader, source) -> bytes:
    h = await reader.open(source)
    try:
        out = bytearray()
        while piece := await reader.read(h, len(out), 256 * KiB):
            out += piece
        return bytes(out)
    finally:
        reader.close(h)


def test_folder_names_are_unique_and_safe():
    rules = [
        {"id": "1", "type": "Custom", "name": "business-hours"},
        {"id": "business-hours-rule", "type": "BusinessHours", "name": "Work Hours"},
        {"id": "after-hours-rule", "type": "AfterHours", "name": "After Hours"},
        {"id": "2", "type": "Custom", "name": "../../etc"},
        {"id": "3", "type": "Custom", "name": "VIP"},
        {"id": "4", "type": "Custom", "name": "VIP"},
        {"id": "5", "type": "Custom", "name": None},
    ]
    names = folder_names(rules)
    assert {n: r["id"] for n, r in names.items()} == {
        "business-hours (1)": "1", "business-hours": "business-hours-rule",
        "after-hours": "after-hours-rule", "_.._etc": "2", "VIP": "3", "VIP (4)": "4",
        "rule 5": "5"}
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert greeting_file_name("Voicemail", "audio/mpeg") == "Voicemail.mp3"
    assert greeting_file_name("HoldMusic", "audio/wav") == "HoldMusic.wav"


def test_answering_rule_urls_are_classified_by_the_spec():
    base = "https://platform.ringcentral.com/restapi/v1.0/account/~/extension/~/answering-rule"
    assert classify("GET", base) == ("answering-rule", Group.MEDIUM)
    assert classify("GET", base + "/business-hours-rule") == ("answering-rule-read", Group.LIGHT)
    assert classify("PUT", base + "/business-hours-rule")[1] is Group.MEDIUM


async def test_greetings_read_back_byte_identical():
    async with stack() as (emu, rc, reader):
        model = GreetingsModel(rc)
        emu.stats.reset()
        folders = await model.refresh()
        assert set(folders) == {"business-hours", "after-hours", "Family & VIP"}
        assert set(folders["business-hours"].files) == {"Voicemail.mp3"}
        assert set(folders["after-hours"].files) == {"Voicemail.wav"}
        assert set(folders["Family & VIP"].files) == {"Introductory.wav", "Voicemail.mp3"}
        # One rule listing and one metadata request per custom greeting.
        assert emu.stats.requests["answering-rule-list"] == 1
        assert emu.stats.requests["greeting-get"] == 4
        for folder in folders.values():
            for file in folder.files.values():
                stored = emu.store.greetings[file.greeting_id]
                assert stored.answering_rule_id == folder.rule_id
                assert file.source.key == f"greeting:{file.greeting_id}"
                assert await read_all(reader, file.source) == stored.media.read(0, stored.media.size)
        assert model.lookup("after-hours", "Voicemail.wav") is folders["after-hours"].files["Voicemail.wav"]
        assert model.lookup("after-hours", "Voicemail.mp3") is None
        assert model.lookup("nope", "Voicemail.mp3") is None


async def test_replacing_a_greeting_changes_what_the_rule_plays():
    wav = media.audio_wav(321, 2).read(0, 10**7)
    mp3 = media.audio_mp3(654, 2).read(0, 10**7)
    async with stack() as (emu, rc, reader):
        model = GreetingsModel(rc)
        await model.refresh()
        old = model.lookup("business-hours", "Voicemail.mp3")
        new = await model.replace("business-hours", "Voicemail.wav", wav, "audio/wav")
        assert new.name == "Voicemail.wav" and new.greeting_id != old.greeting_id
        assert set(model.folders["business-hours"].files) == {"Voicemail.wav"}
        rule = greetings.rules_of(emu.store)[greetings.BUSINESS_HOURS_RULE]
        assert rule.greetings["Voicemail"] == new.greeting_id
        assert await read_all(reader, new.source) == wav

        # A type that played a preset gets its first custom file (any case in the name).
        hold = await model.replace("after-hours", "holdmusic.MP3", mp3, "audio/mpeg")
        assert hold.name == "HoldMusic.mp3"
        assert set(model.folders["after-hours"].files) == {"Voicemail.wav", "HoldMusic.mp3"}
        assert await read_all(reader, hold.source) == mp3

        for folder, name, code in (("business-hours", "Voicemail.ogg", errno.EINVAL),
                                   ("business-hours", "Voicemail", errno.EINVAL),
                                   ("business-hours", "Company.mp3", errno.EINVAL),
                                   ("no-such-rule", "Voicemail.mp3", errno.ENOENT)):
            with pytest.raises(GreetingError) as info:
                model.upload_target(folder, name)
            assert info.value.errno == code, (folder, name)
        target = model.upload_target("Family & VIP", "introductory.wav")
        assert (target.answering_rule_id, target.greeting_type, target.file_name, target.content_type) == (
            greetings.CUSTOM_RULE, "Introductory", "Introductory.wav", "audio/wav")
