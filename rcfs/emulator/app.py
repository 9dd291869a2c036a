"""The emulator as two ASGI apps sharing one account: the platform host and the media host.

INTERFACE CONTRACT (sending.py and the tests rely on these names):

    emu = Emulator(config, store)            # store: rcfs.emulator.store.Store (seeded or empty)
    emu.platform_app, emu.media_app          # Starlette apps (ASGI)
    emu.platform_base, emu.media_base        # absolute base URLs, no trailing slash; set by
                                             # the server once the sockets are bound
    emu.render_message(msg) -> dict          # GetMessageInfoResponse JSON of a store.Message
    emu.api_error(status, code, message, **extra) -> starlette Response   # RingCentral error body
    emu.authenticate(request) -> Session     # raises the 401 response (as an exception) if bad
    emu.stats                                # counters per route / group, bytes served

The platform app serves /restapi/oauth/* and /restapi/v1.0/* JSON routes plus /_emulator/*
(admin); the media app serves the content routes (message content, recording content,
greeting content). Both count against the same rate limiter and token table.
"""

from __future__ import annotations
