"""Where credentials and options come from: flags, environment, config file.

Secrets (client secret, JWT) are never taken from the command line, where other users
could read them in `ps`; they come from the environment (`RC_CLIENT_SECRET`, `RC_JWT`,
the names RingCentral's own samples use) or the config file
(`~/.config/rcfs/config.toml` by default), which should be mode 0600.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import tomllib
from pathlib import Path

import platformdirs

from .api.client import Credentials

log = logging.getLogger(__name__)

APP = "rcfs"
DEFAULT_SERVER = "https://platform.ringcentral.com"


class SettingsError(Exception):
    """The user's configuration is incomplete or unreadable: the message says how to fix it."""


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP))


def default_config_file() -> Path:
    return config_dir() / "config.toml"


def default_state_dir() -> Path:
    """Token store and learned metadata (small, private)."""
    return Path(platformdirs.user_cache_dir(APP))


def load_config_file(path: Path | None) -> dict:
    """Read the TOML config; a missing default file is fine, a missing named one is not."""
    explicit = path is not None
    path = path or default_config_file()
    if not path.exists():
        if explicit:
            raise SettingsError(f"config file {path} does not exist")
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("config file %s is readable by other users; run: chmod 600 %s", path, path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None


def resolve_credentials(*, server_url: str | None, client_id: str | None,
                        config_path: Path | None, env: dict[str, str] | None = None) -> Credentials:
    """Flags win over the environment, which wins over the config file."""
    env = dict(os.environ if env is None else env)
    cfg = load_config_file(config_path)

    def pick(flag: str | None, env_name: str, cfg_name: str) -> str | None:
        if flag:
            return flag
        if env.get(env_name):
            return env[env_name]
        value = cfg.get(cfg_name)
        return str(value) if value else None

    jwt = pick(None, "RC_JWT", "jwt")
    if not jwt and cfg.get("jwt_file"):
        try:
            jwt = Path(str(cfg["jwt_file"])).expanduser().read_text().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read jwt_file: {exc}") from None
    values = {
        "server_url": pick(server_url, "RC_SERVER_URL", "server_url") or DEFAULT_SERVER,
        "client_id": pick(client_id, "RC_CLIENT_ID", "client_id"),
        "client_secret": pick(None, "RC_CLIENT_SECRET", "client_secret"),
        "jwt": jwt,
    }
    missing = [k for k in ("client_id", "client_secret", "jwt") if not values[k]]
    if missing:
        names = {"client_id": "RC_CLIENT_ID", "client_secret": "RC_CLIENT_SECRET", "jwt": "RC_JWT"}
        raise SettingsError(
            "missing " + ", ".join(names[m] for m in missing)
            + f": set them in the environment or in {config_path or default_config_file()} "
            "(keys server_url, client_id, client_secret, jwt or jwt_file). "
            "To try rcfs without an account: rcfs mount --demo MOUNTPOINT")
    return Credentials(server_url=values["server_url"].rstrip("/"), client_id=values["client_id"],
                       client_secret=values["client_secret"], jwt=values["jwt"])


def parse_since(text: str | None) -> dt.datetime:
    """`--since`: an ISO date/time or a number of days (`90d`); default: all history."""
    if not text:
        return dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=int(text[:-1]))
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"--since: expected a date like 2026-01-31 or a day count like 90d, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def parse_size(text: str) -> int:
    """`256M`, `1G`, `65536` -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise SettingsError(f"expected a size like 256M or 1G, got {text!r}") from None


def parse_size_or_off(text: str, flag: str) -> int | None:
    """Like `parse_size`, and `off` (or `none`, `never`) -> None."""
    if text.strip().lower() in ("off", "none", "never"):
        return None
    try:
        return parse_size(text)
    except SettingsError:
        raise SettingsError(f"{flag}: expected a size like 256M or 1G, or 'off', got {text!r}") from None
