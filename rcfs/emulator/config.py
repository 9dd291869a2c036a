"""Emulator settings. Every knob has a flag (`rcfs emulator --help`), an environment
variable (RCFS_EMU_<NAME upper-case>) and, where it makes sense at run time, the admin
endpoint (`POST /_emulator/config`)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Faults:
    """Fault switches; all off by default. Rates are probabilities in [0, 1] per request."""

    latency_ms: float = 0.0  # added before every answer
    # Added before the first answer on each new connection: production is HTTPS, so a new
    # connection costs a TCP and a TLS handshake (two round trips) before its first request.
    handshake_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered 503 (CMN-201)
    reset_rate: float = 0.0  # share of media bodies cut by a connection reset mid-body
    truncate_rate: float = 0.0  # share of media bodies that end early with a clean close
    chunk_delay_ms: float = 0.0  # pause between 1 MiB pieces of a media body (a slow link)
    force_429: int = 0  # the next N rate-limited requests get 429 regardless of budget
    # send POSTs only (fax, sms, mms, greeting; see sending.py):
    send_force_503: int = 0  # the next N are answered 503 CMN-201, nothing stored
    send_force_429: int = 0  # the next N are answered 429 CMN-301 + Retry-After, nothing stored
    send_drop_answer: int = 0  # the next N are stored, then the connection drops unanswered
    send_answer_delay_ms: float = 0.0  # pause after storing a sent message, before answering

    cut_at: float = 0.5  # share of a media body sent before a reset/truncate cuts it (0: none)
    seed: int = 1  # faults are drawn from a seeded RNG so runs repeat


@dataclasses.dataclass
class EmulatorConfig:
    # accounts and credentials ------------------------------------------------------
    client_id: str = "rcfs-demo-client"
    client_secret: str = "rcfs-demo-secret"
    jwt: str = "rcfs-demo-jwt"  # the user credential the JWT grant accepts (a super admin)
    # The second demo credential: a regular user (extension 102), who may read only
    # their own mailbox (company.py).
    user_jwt: str = "rcfs-demo-user-jwt"
    password_grant: bool = True  # the official SDK still uses it; switchable off
    access_token_ttl: int | None = None  # None: honour the request, clamped to [600, 3600]
    refresh_token_ttl: int | None = None  # None: request / 604800
    # seeded data ---------------------------------------------------------------------
    seed: int = 42
    scale: str = "demo"  # demo | listing | bench | company (see seed.py)
    faxes: int | None = None  # override the number of faxes (listing tests: 10000)
    hide_sizes: float = 0.3  # share of attachments whose JSON omits `size`
    extra_extensions: int = 0  # that many more (empty) extensions in the company (listing tests)
    hostile_names: bool = False  # attachments with fileName values that try to escape
    odd_records: bool = False  # a few messages whose JSON is odd (seed.ODD_RECORDS)
    # rate limits -------------------------------------------------------------------
    window: float = 60.0  # seconds per window and penalty; tests scale it down
    limit_light: int = 50
    limit_medium: int = 40
    limit_heavy: int = 10
    limit_auth: int = 5
    rate_limits: bool = True
    # media -------------------------------------------------------------------------
    max_bytes_per_response: int | None = None  # answer 206 with at most this many bytes
    plain_view: bool = False  # benchmarks only: /plain/ index pages + files, no auth (plainview.py)
    # sending -----------------------------------------------------------------------
    send_delay: float = 2.0  # seconds a fax/SMS stays Queued before Sent/SendingFailed
    failing_numbers: tuple[str, ...] = ("+15550000666",)  # sends to these end SendingFailed
    # message-store reports (reports.py) ---------------------------------------------
    report_delay: float = 3.0  # seconds from a report task's creation to Completed/Failed
    report_failures: int = 0  # the next N report tasks end Failed
    report_archive_max_bytes: int = 1_000_000_000  # attachment zips are split at this size

    # production behaviours that come and go (issue 9; all off by default) -----------
    compress_json: bool = False  # gzip/deflate JSON answers the request's Accept-Encoding allows
    session_cap: int | None = None  # live sessions per user and app; the oldest ends (production: 5)
    missing_permissions: tuple[str, ...] = ()  # app permissions answered 403 CMN-401
    # Extension ids whose mailbox answers 403 CMN-408 [ReadMessages] even to an admin.
    denied_extensions: tuple[str, ...] = ()
    chunked_media: bool = False  # media answers without Content-Length (chunked)
    unknown_media_total: bool = False  # Content-Range `bytes a-b/*`; 416 without a size
    ignore_range: bool = False  # media answers 200 with the whole body whatever Range says
    foreign_media_rate: float = 0.0  # share of attachment URIs that point at foreign_media_base
    foreign_media_base: str = "https://media.rcfs-foreign.invalid"
    # push over WebSocket (gateway.py): None = production's value scaled by window/60 ---
    ws_idle_timeout: float | None = None  # production 1800 s: no client frame -> WSG-902
    ws_absolute_timeout: float | None = None  # production 86400 s -> WSG-903
    ws_recovery_timeout: float | None = None  # production 180 s: a dropped session recovers
    ws_token_ttl: float | None = None  # production 600 s
    # faults --------------------------------------------------------------------------
    faults: Faults = dataclasses.field(default_factory=Faults)
