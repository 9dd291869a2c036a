"""The background learner on a real mount (issue 20 item 7): greetings, whose size the
API never lists, show their real size in `ls -l` without anyone opening them, each for
one 1-byte probe."""

from __future__ import annotations

import os
import time

from conftest import build_config
from accounthelp import account_files, emulator_media
from fusehelp import fuse_required, mounted
from rcfs.emulator import seed

pytestmark = fuse_required

EMU = dict(window=1.0)


def test_greeting_sizes_are_learned_without_opening_them(start_emulator, tmp_path):
    srv = start_emulator(**EMU)
    store = seed.build_store(build_config(**EMU))
    mp = tmp_path / "rc"
    with mounted(mp, state_dir=tmp_path / "state", background=True, server_url=srv.platform,
                 client_id=srv.client_id, client_secret=srv.client_secret, jwt=srv.jwt):
        greetings = account_files(mp, tops=("greetings",))
        assert greetings
        want = {p: emulator_media(store, p).size for p in greetings}
        assert all(size != 4096 for size in want.values())  # (4096 is the provisional size)
        deadline = time.monotonic() + 120
        while {p: os.stat(p).st_size for p in greetings} != want:
            assert time.monotonic() < deadline, {p.name: (os.stat(p).st_size, n) for p, n in want.items()}
            time.sleep(0.2)
        assert all(os.getxattr(p, "user.rc.size").decode() == str(n) for p, n in want.items())
        # Learned by probes (a 1-byte range each), not by reading the greetings.
        log = srv.stats()["media_requests"]
        greeting_requests = [entry for entry in log if entry[0] == "greeting-content"]
        assert len(greeting_requests) == len(greetings), greeting_requests
        assert all(rng == "bytes=0-0" for _, _, rng in greeting_requests), greeting_requests
