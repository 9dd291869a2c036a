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
import re
import shutil
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
    """Token store and learned metadata (small, private): `~/.local/state/rcfs`.

    Not the cache dir: cache cleaners (and users) wipe that, and the tokens and learned
    sizes would go with it.
    """
    return Path(platformdirs.user_state_dir(APP))


def legacy_state_dir() -> Path:
    """Where rcfs 0.1 kept its state (the cache dir), migrated by `migrate_state_dir`."""
    return Path(platformdirs.user_cache_dir(APP))


def migrate_state_dir(new: Path, old: Path) -> bool:
    """Move an existing store from `old` to `new` when `new` has none yet; True if moved.

    Only rcfs's own account directories move (the ones holding tokens.json or
    state.json); anything else in the old directory stays where it is.
    """
    if not old.is_dir() or old.resolve() == new.resolve():
        return False
    accounts = [d for d in old.iterdir()
                if d.is_dir() and not d.is_symlink()
                and ((d / "tokens.json").is_file() or (d / "state.json").is_file())]
    if not accounts:
        return False
    new.mkdir(parents=True, exist_ok=True, mode=0o700)
    moved = False
    for acct in accounts:
        dest = new / acct.name
        if dest.exists():
            continue  # the new place already has this account: it wins
        try:
            os.replace(acct, dest)  # same filesystem: one rename
        except OSError:
            try:
                shutil.copytree(acct, dest, copy_function=shutil.copy2)
                shutil.rmtree(acct)
            except OSError as exc:
                log.warning("could not move %s to %s: %s", acct, dest, exc)
                continue
        moved = True
    if moved:
        log.info("moved rcfs state from %s to %s", old, new)
    return moved


def prepare_state_dir(path: Path, *, explicit: bool) -> Path:
    """The state dir to use, created 0700 if missing.

    rcfs's default directory is its own and is kept at 0700. A directory the user named
    (`--state-dir`) is theirs: rcfs does not change its mode, it refuses one that
    someone else could write to (they could plant or swap the token store) or that
    belongs to another user.
    """
    path = path.expanduser().absolute()
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise SettingsError(f"cannot create state dir {path}: {exc.strerror}") from None
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        return path
    try:
        st = path.stat()
    except OSError as exc:
        raise SettingsError(f"cannot use state dir {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SettingsError(f"state dir {path} is not a directory")
    if not explicit:
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
        return path
    problems = []
    if st.st_uid != os.getuid():
        problems.append(f"it belongs to uid {st.st_uid}, not to you (uid {os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"other users can write to it (mode {stat.S_IMODE(st.st_mode):04o})")
    if problems:
        raise SettingsError(
            f"refusing --state-dir {path}: " + " and ".join(problems)
            + "; it holds your login tokens. Use a private directory (mkdir -m 700 DIR), "
              "or fix this one with: chmod go-w " + str(path))
    return path


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
    # Only where the media host is not the platform's twin (the emulator's own port).
    media_url = pick(None, "RC_MEDIA_URL", "media_url") or ""
    return Credentials(server_url=values["server_url"].rstrip("/"), client_id=values["client_id"],
                       client_secret=values["client_secret"], jwt=values["jwt"], media_url=media_url.rstrip("/"))


def resolve_shared_budget(*, flag: str | None, config_path: Path | None,
                          env: dict[str, str] | None = None) -> tuple[str | None, str | None]:
    """The fleet's Redis (issue 18): (URL or None, password or None).

    The URL comes from `--shared-budget` (or fstab's `shared_budget=`), else the config
    file's `shared_budget`; the password only from the config file
    (`shared_budget_password`) or `RCFS_REDIS_PASSWORD`, never from a command line, and
    never inside the URL (refused, wherever the URL comes from).
    """
    from .api.shared_budget import FleetError, parse_url

    env = dict(os.environ if env is None else env)
    cfg = load_config_file(config_path)
    url = flag or (str(cfg["shared_budget"]) if cfg.get("shared_budget") else None)
    if not url:
        return None, None
    try:
        url = parse_url(url)
    except FleetError as exc:
        raise SettingsError(str(exc)) from None
    password = env.get("RCFS_REDIS_PASSWORD") or (str(cfg["shared_budget_password"])
                                                   if cfg.get("shared_budget_password") else None)
    return url, password


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


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, flag: str = "size") -> int:
    """`256M`, `1G`, `1.5GiB`, `65536` -> bytes (binary units)."""
    match = _SIZE_RE.match(str(text).strip().lower())
    if not match:
        raise SettingsError(f"{flag}: expected a size like 256M or 1G, got {text!r}")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]


def parse_size_or_off(text: str, flag: str) -> int | None:
    """Like `parse_size`, and `off` (or `none`, `never`) -> None."""
    if str(text).strip().lower() in ("off", "none", "never"):
        return None
    try:
        return parse_size(text, flag)
    except SettingsError:
        raise SettingsError(f"{flag}: expected a size like 256M or 1G, or 'off', got {text!r}") from None


def format_size(n: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


# Limits of the size options, with the reason for each.
MIN_BLOCK = 4 << 10  # one page: a smaller block costs a request per page
MAX_BLOCK = 64 << 20  # one block is one HTTP request held in memory
MIN_CACHE_BLOCKS = 2  # the reader keeps the block being read and the next one
MAX_READ_AHEAD_KB = 1 << 20  # 1 GiB; the kernel clamps far below this anyway


def check_sizes(*, cache_bytes: int, block_size: int, read_ahead_kb: int) -> None:
    """Raise SettingsError (naming the flag) for sizes rcfs cannot run with."""
    if not MIN_BLOCK <= block_size <= MAX_BLOCK:
        raise SettingsError(f"--block-size: must be between {format_size(MIN_BLOCK)} and "
                            f"{format_size(MAX_BLOCK)}, got {format_size(block_size)}")
    if cache_bytes < MIN_CACHE_BLOCKS * block_size:
        raise SettingsError(f"--cache-size: must hold at least {MIN_CACHE_BLOCKS} blocks of --block-size "
                            f"{format_size(block_size)}, i.e. at least "
                            f"{format_size(MIN_CACHE_BLOCKS * block_size)}; got {format_size(cache_bytes)}")
    if not 0 <= read_ahead_kb <= MAX_READ_AHEAD_KB:
        raise SettingsError(f"--read-ahead: must be between 0 and {MAX_READ_AHEAD_KB} KiB, got {read_ahead_kb}")


def parse_read_ahead(text: str) -> int:
    """`--read-ahead`: a whole number of KiB."""
    t = str(text).strip()
    if not t.isdigit():
        raise SettingsError(f"--read-ahead: expected a whole number of KiB (e.g. 1024; 0 keeps the "
                            f"kernel default), got {text!r}")
    return int(t)
