"""Run the emulator over real HTTP: two loopback listeners (platform and media host).

Why hypercorn on trio: it runs inside the same trio world as pyfuse3 and the rcfs
client (one process can host a mount and an emulator in one nursery, and tests start
it with `nursery.start`), it serves any ASGI app (the Starlette apps in `app.py`), and
it is a maintained server with HTTP/1.1 keep-alive and streaming bodies.

In-process use:

    emu = Emulator(config, store)
    async with trio.open_nursery() as nursery:
        platform, media = await nursery.start(partial(serve, emu, host="127.0.0.1"))
        ...
        nursery.cancel_scope.cancel()

Command line: `python -m rcfs.emulator --help` (also `rcfs emulator`). Once both
listeners accept connections it prints exactly one line to stdout, e.g.

    rcfs-emulator ready platform=http://127.0.0.1:40123 media=http://127.0.0.1:40125

(flushed; `--print-credentials` adds the client id, secret and JWT after it) and runs
until SIGINT or SIGTERM, then exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import types
import typing
from functools import partial
from typing import Any, Sequence

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .app import Emulator
from .config import EmulatorConfig, Faults
from .media_routes import ConnectionAbort
from .store import Store

log = logging.getLogger(__name__)

ENV_PREFIX = "RCFS_EMU_"

_HELP = {
    "client_id": "OAuth client id the token endpoint accepts",
    "client_secret": "OAuth client secret the token endpoint accepts",
    "jwt": "user credential of the super admin (extension 101): the JWT-bearer assertion (and the "
           "password-grant password)",
    "user_jwt": "user credential of a regular user (extension 102), who may read only their own "
                "mailbox: another extension's answers 403 CMN-408 [ReadMessages], the company call "
                "log 403 CMN-408 [FullCompanyCallLog]",
    "denied_extensions": "comma-separated extension ids whose mailbox answers 403 CMN-408 even to an admin",
    "password_grant": "accept grant_type=password (deprecated; the official SDK uses it)",
    "access_token_ttl": "access-token lifetime in seconds, overriding the [600, 3600] clamp",
    "refresh_token_ttl": "refresh-token lifetime in seconds, overriding the request",
    "seed": "seed of the generated account (same seed, same data)",
    "scale": "size of the generated account: demo | listing | bench | company (240 extensions, "
             "20,000 recorded calls)",
    "faxes": "number of faxes to generate (overrides the scale's count)",
    "extra_extensions": "add this many empty extensions to the company (10,000-extension listings)",
    "hide_sizes": "share of attachments whose JSON omits `size` (0..1)",
    "hostile_names": "add MMS attachments whose fileName values try to escape",
    "odd_records": "add messages with odd JSON: 64-bit-overflowing sizes, dates in year 1 or 9999, "
                   "missing fields, C1 controls and bidi overrides in names",
    "window": "rate-limit window and penalty in seconds",
    "limit_light": "Light group requests per window",
    "limit_medium": "Medium group requests per window",
    "limit_heavy": "Heavy group requests per window",
    "limit_auth": "Auth group requests per window",
    "rate_limits": "enforce rate limits (headers are sent either way)",
    "max_bytes_per_response": "cap media answers at this many bytes (206)",
    "plain_view": "benchmarks only: serve the media as plain HTTP index pages and files under "
                  "/plain/ on the media host, without auth (for rclone/httpdirfs)",
    "send_delay": "seconds a sent fax/SMS stays Queued",
    "failing_numbers": "comma-separated numbers whose sends end SendingFailed",
    "latency_ms": "fault: milliseconds added before every API answer",
    "handshake_ms": "fault: milliseconds added before the first answer on each new connection "
                    "(production's TCP and TLS handshakes)",
    "error_rate": "fault: share of API requests answered 503 CMN-201 (0..1)",
    "reset_rate": "fault: share of media bodies cut by a connection abort (0..1)",
    "truncate_rate": "fault: share of media bodies ended early (0..1)",
    "chunk_delay_ms": "fault: milliseconds between the 1 MiB pieces of a media body (a slow link)",
    "force_429": "fault: the next N throttled requests get 429",
    "send_force_503": "fault: the next N send POSTs get 503 (nothing stored)",
    "send_force_429": "fault: the next N send POSTs get 429 (nothing stored)",
    "send_drop_answer": "fault: the next N send POSTs are stored, then their connection drops unanswered",
    "send_answer_delay_ms": "fault: milliseconds a send POST waits after storing, before answering",

    "ws_idle_timeout": "push gateway: seconds without a client frame before WSG-902 (none: 1800 x window/60)",
    "ws_absolute_timeout": "push gateway: seconds a socket may live before WSG-903 (none: 86400 x window/60)",
    "ws_recovery_timeout": "push gateway: seconds a dropped session can be recovered (none: 180 x window/60)",
    "ws_token_ttl": "push gateway: lifetime of a ws token in seconds (none: 600 x window/60)",
    "cut_at": "fault: share of a media body sent before a reset/truncate cuts it (0..1)",
    "compress_json": "gzip/deflate JSON answers when the request's Accept-Encoding allows",
    "session_cap": "live sessions per user and app; a new one ends the oldest (production: 5)",
    "missing_permissions": "comma-separated app permissions answered 403 CMN-401 (e.g. ReadCallRecording)",
    "chunked_media": "media answers without Content-Length (chunked transfer encoding)",
    "unknown_media_total": "media Content-Range total `*`, and 416 answers without a size",
    "ignore_range": "media answers 200 with the whole body whatever Range asks",
    "foreign_media_rate": "share of attachment URIs pointing at --foreign-media-base (0..1)",
    "foreign_media_base": "base URL of the foreign attachment URIs",
}


class _QuietAborts(logging.Filter):
    """Drop hypercorn's error log lines for the deliberate reset fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, ConnectionAbort):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    cfg = HypercornConfig()
    cfg.bind = [f"{host}:{port}"]
    cfg.accesslog = None
    error_logger = logging.getLogger("rcfs.emulator.hypercorn")
    if not any(isinstance(f, _QuietAborts) for f in error_logger.filters):
        error_logger.addFilter(_QuietAborts())
    cfg.errorlog = error_logger
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30.0
    cfg.keep_alive_max_requests = 100_000
    return cfg


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve(emu: Emulator, *, host: str = "127.0.0.1", platform_port: int = 0, media_port: int = 0,
                task_status: trio.TaskStatus[tuple[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `emu`'s platform and media apps until cancelled.

    Reports `(platform_base, media_base)` through `task_status` once both listeners
    are bound and listening; `emu.platform_base` / `emu.media_base` are set first, so
    every URI the apps render points at the real ports.
    """
    async with trio.open_nursery() as nursery:
        platform_binds = await nursery.start(partial(hypercorn_serve, emu.platform_app,
                                                     _hypercorn_config(host, platform_port)))
        media_binds = await nursery.start(partial(hypercorn_serve, emu.media_app,
                                                  _hypercorn_config(host, media_port)))
        emu.platform_base = platform_binds[0].rstrip("/")
        emu.media_base = media_binds[0].rstrip("/")
        log.info("emulator listening: platform=%s media=%s", emu.platform_base, emu.media_base)
        task_status.started((emu.platform_base, emu.media_base))


def build_store(config: EmulatorConfig) -> Store:
    """The seeded account for `config` (an empty one if the seed module is missing)."""
    try:
        from . import seed
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.seed":
            raise
        log.warning("rcfs.emulator.seed is not available: serving an empty account")
        return Store()
    return seed.build_store(config)


# command line --------------------------------------------------------------------------
def _field_kind(field_type: Any) -> tuple[type, bool]:
    """(base type, optional?) of an EmulatorConfig field annotation."""
    hint = field_type
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return tuple, optional
    return hint, optional


def _converter(kind: type, optional: bool, name: str):
    def convert(text: str) -> Any:
        text = text.strip()
        if optional and text.lower() in ("", "none", "null"):
            return None
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"{name}: expected true/false, got {text!r}")
        if kind is tuple:
            return tuple(v.strip() for v in text.split(",") if v.strip())
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: invalid value {text!r}") from None
    return convert


def _fields() -> list[tuple[str, str, Any, Any]]:
    """(dest, flag, annotation, default) for every config and fault setting."""
    hints = typing.get_type_hints(EmulatorConfig)
    fault_hints = typing.get_type_hints(Faults)
    out = []
    for f in dataclasses.fields(EmulatorConfig):
        if f.name == "faults":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, f.name.replace("_", "-"), hints[f.name], default))
    for f in dataclasses.fields(Faults):
        flag = "fault-seed" if f.name == "seed" else f.name.replace("_", "-")
        out.append((f"fault_{f.name}", flag, fault_hints[f.name], f.default))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The CLI parser; every option also reads `RCFS_EMU_<DEST>` from the environment."""
    parser = argparse.ArgumentParser(
        prog="rcfs emulator",
        description="Run the RingCentral API emulator on two loopback listeners (platform and "
                    "media host). Every option can also be set with the environment variable "
                    f"shown in brackets; flags win over the environment.",
        epilog="Admin endpoints (no auth) on the platform host: GET /_emulator/stats, "
               "POST /_emulator/stats/reset, GET|POST /_emulator/config, "
               "POST /_emulator/ratelimit/reset, POST /_emulator/messages, GET /_emulator/info, "
               "GET|POST /_emulator/push (the WebSocket gateway's state and switches), "
               "POST /_emulator/calls/live (a recorded call, pushed as telephony-session events). "
               "Log in with POST /restapi/oauth/token (Basic client-id:client-secret, "
               "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer, assertion=<jwt>).",
    )
    net = parser.add_argument_group("listeners")
    net.add_argument("--host", default=os.environ.get(ENV_PREFIX + "HOST", "127.0.0.1"),
                     help="address to bind both listeners to [RCFS_EMU_HOST] (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=int(os.environ.get(ENV_PREFIX + "PORT", "0")),
                     help="platform (API) port, 0 = any free port [RCFS_EMU_PORT] (default 0)")
    net.add_argument("--media-port", type=int, default=int(os.environ.get(ENV_PREFIX + "MEDIA_PORT", "0")),
                     help="media (content) port, 0 = any free port [RCFS_EMU_MEDIA_PORT] (default 0)")
    net.add_argument("--print-credentials", action="store_true",
                     default=os.environ.get(ENV_PREFIX + "PRINT_CREDENTIALS", "") not in ("", "0", "false"),
                     help="after the ready line, print the server URL, client id, client secret and "
                          "JWT to use [RCFS_EMU_PRINT_CREDENTIALS]")
    net.add_argument("--log-level", default=os.environ.get(ENV_PREFIX + "LOG_LEVEL", "WARNING"),
                     help="logging level on stderr [RCFS_EMU_LOG_LEVEL] (default WARNING)")

    settings = parser.add_argument_group("emulator settings")
    for dest, flag, hint, default in _fields():
        kind, optional = _field_kind(hint)
        env = ENV_PREFIX + dest.upper()
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{_HELP.get(dest.removeprefix('fault_'), dest)} [{env}] (default {shown})"
        settings.add_argument(f"--{flag}", dest=dest, metavar={bool: "BOOL", tuple: "LIST"}.get(kind, kind.__name__.upper()),
                              type=_converter(kind, optional, flag), default=None, help=help_text)
    return parser


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> EmulatorConfig:
    """An EmulatorConfig from parsed flags, falling back to RCFS_EMU_* variables."""
    environ = dict(os.environ if environ is None else environ)
    config = EmulatorConfig()
    for dest, flag, hint, _default in _fields():
        value = getattr(args, dest, None)
        if value is None and ENV_PREFIX + dest.upper() in environ:
            kind, optional = _field_kind(hint)
            try:
                value = _converter(kind, optional, flag)(environ[ENV_PREFIX + dest.upper()])
            except argparse.ArgumentTypeError as exc:
                raise SystemExit(f"rcfs emulator: {ENV_PREFIX + dest.upper()}: {exc}") from None
        elif value is None:
            continue
        if dest.startswith("fault_"):
            setattr(config.faults, dest.removeprefix("fault_"), value)
        else:
            setattr(config, dest, value)
    return config


async def _run(emu: Emulator, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            platform, media = await nursery.start(partial(serve, emu, host=args.host,
                                                          platform_port=args.port, media_port=args.media_port))
            print(f"rcfs-emulator ready platform={platform} media={media}", flush=True)
            if args.print_credentials:
                c = emu.config
                print(f"  server_url={platform}\n  client_id={c.client_id}\n"
                      f"  client_secret={c.client_secret}\n  jwt={c.jwt}\n  user_jwt={c.user_jwt}", flush=True)
            async for signum in signals:
                log.info("signal %d: stopping", signum)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rcfs.emulator` / `rcfs emulator`: parse options, seed, serve until a signal."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    try:
        store = build_store(config)
    except ValueError as exc:
        parser.error(str(exc))
    emu = Emulator(config, store)
    trio.run(_run, emu, args)
    return 0
