"""The `rcfs` command line as a user meets it: bad option values, the files it creates,
the state directory it uses (and the one the user names), `--version`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from clihelp import rcfs_mount, run_rcfs
from conftest import spawn_emulator
from fusehelp import force_unmount, fuse_required
from rcfs import settings
from rcfs.settings import SettingsError


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    srv = spawn_emulator(tmp_path_factory.mktemp("emu"), window=1.0)
    try:
        yield srv
    finally:
        srv.stop()


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user whose home, config, cache and state dirs are all under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
               XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"),
               XDG_STATE_HOME=str(tmp_path / "home" / ".local" / "state"), **extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def unreachable_env(tmp_path: Path) -> dict[str, str]:
    """Credentials for a server that is not there (port 9, discard: refused on loopback)."""
    return user_env(tmp_path, RC_SERVER_URL="http://127.0.0.1:9", RC_CLIENT_ID="id",
                    RC_CLIENT_SECRET="secret", RC_JWT="jwt")


# --- size options ------------------------------------------------------------------------

BAD_SIZES = [
    (["--cache-size", "0"], "--cache-size"),
    (["--cache-size=-1M"], "--cache-size"),
    (["--cache-size", "lots"], "--cache-size"),
    (["--cache-size", "infM"], "--cache-size"),
    (["--cache-size", "1M", "--block-size", "1M"], "--cache-size"),  # one block: too small
    (["--block-size", "0"], "--block-size"),
    (["--block-size", "100"], "--block-size"),
    (["--block-size", "1G", "--cache-size", "4G"], "--block-size"),
    (["--direct-io-above", "sometimes"], "--direct-io-above"),
    (["--direct-io-above=-1"], "--direct-io-above"),
    (["--read-ahead=-1"], "--read-ahead"),
    (["--read-ahead", "1M"], "--read-ahead"),
    (["--read-ahead", "99999999"], "--read-ahead"),
    (["--outbox-settle", "-1"], "--outbox-settle"),
    (["--outbox-settle", "nan"], "--outbox-settle"),
]


@fuse_required
@pytest.mark.parametrize("args, flag", BAD_SIZES, ids=[" ".join(a) for a, _ in BAD_SIZES])
def test_a_bad_size_is_a_clear_error_before_anything_starts(emu, tmp_path, args, flag):
    # Real credentials of a running emulator: a value that slipped through would get as
    # far as mounting (the mount is cleaned up below if it does).
    mp = tmp_path / "mp"
    mp.mkdir()
    env = user_env(tmp_path, **emu.env)
    try:
        result = run_rcfs(["mount", str(mp), "--state-dir", str(tmp_path / "state"), *args], env=env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rcfs mount {' '.join(args)} was accepted and mounted")
    finally:
        force_unmount(mp)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"rcfs: {flag}: "), result.stderr
    assert not (tmp_path / "state").exists()  # refused before touching anything


@pytest.mark.parametrize("text, expected", [
    ("256M", 256 << 20), ("1G", 1 << 30), ("1.5GiB", 3 << 29), ("64k", 64 << 10), ("65536", 65536),
    ("4 MB", 4 << 20), ("2t", 2 << 40),
])
def test_sizes_that_parse(text, expected):
    assert settings.parse_size(text) == expected


def test_the_defaults_pass_the_checks():
    settings.check_sizes(cache_bytes=settings.parse_size("256M"), block_size=settings.parse_size("1M"),
                         read_ahead_kb=1024)
    with pytest.raises(SettingsError, match="--cache-size"):
        settings.check_sizes(cache_bytes=0, block_size=1 << 20, read_ahead_kb=0)


# --- files rcfs creates --------------------------------------------------------------------

def test_the_log_file_is_created_0600(tmp_path):
    log_file = tmp_path / "rcfs.log"
    result = run_rcfs(["mount", str(tmp_path / "missing"), "--log-file", str(log_file), "-v"],
                      env=unreachable_env(tmp_path), preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 1 and "does not exist" in result.stderr, result.stderr
    assert log_file.exists()
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
def test_an_unsafe_state_dir_is_refused_and_left_alone(tmp_path, mode):
    state = tmp_path / "shared-state"
    state.mkdir()
    os.chmod(state, mode)
    mp = tmp_path / "mp"
    mp.mkdir()
    result = run_rcfs(["mount", str(mp), "--state-dir", str(state)], env=unreachable_env(tmp_path))
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "refusing --state-dir" in result.stderr and "other users can write to it" in result.stderr, \
        result.stderr
    assert "Traceback" not in result.stderr
    assert stat.S_IMODE(state.stat().st_mode) == mode  # not chmod'ed behind the user's back
    assert list(state.iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory owned by another user")
def test_a_state_dir_of_another_user_is_refused(tmp_path):
    state = tmp_path / "theirs"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    mp = tmp_path / "mp"
    mp.mkdir()
    result = run_rcfs(["mount", str(mp), "--state-dir", str(state)], env=unreachable_env(tmp_path))
    assert result.returncode == 2 and "belongs to uid 65534" in result.stderr, result.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and state.stat().st_uid == 65534


def test_a_safe_state_dir_keeps_the_users_mode(tmp_path):
    # Group-readable is the user's choice (the files inside are 0600 in 0700 dirs).
    state = tmp_path / "mine"
    state.mkdir()
    os.chmod(state, 0o750)
    mp = tmp_path / "mp"
    mp.mkdir()
    result = run_rcfs(["mount", str(mp), "--state-dir", str(state)], env=unreachable_env(tmp_path))
    assert result.returncode == 1 and "cannot reach" in result.stderr, result.stderr  # got to the login
    assert stat.S_IMODE(state.stat().st_mode) == 0o750


# --- the default state dir ------------------------------------------------------------------

@fuse_required
def test_state_lives_in_the_xdg_state_dir_and_an_old_store_moves_there(emu, tmp_path):
    """rcfs 0.1 kept tokens in ~/.cache/rcfs, which cache cleaners wipe. A mount without
    --state-dir uses ~/.local/state/rcfs, and moves the old store there: same session,
    no new login."""
    env = user_env(tmp_path, **emu.env)
    old = tmp_path / "home" / ".cache" / "rcfs"
    new = tmp_path / "home" / ".local" / "state" / "rcfs"
    # A previous version's layout, made by a real mount pointed at the old place.
    with rcfs_mount(tmp_path / "mp1", ["--state-dir", str(old)], env=env):
        assert os.listdir(tmp_path / "mp1" / "faxes")
    [acct] = [d for d in old.iterdir() if (d / "tokens.json").exists()]
    tokens_before = json.loads((acct / "tokens.json").read_text())
    emu.reset_stats()

    with rcfs_mount(tmp_path / "mp2", ["--debug"], env=env):
        assert os.listdir(tmp_path / "mp2" / "faxes")
    assert emu.stats()["requests"].get("oauth-token", 0) == 0  # the moved session was used
    assert (new / acct.name / "tokens.json").is_file()
    assert not acct.exists()  # moved, not copied: one copy of the secrets
    assert stat.S_IMODE(new.stat().st_mode) == 0o700
    tokens_after = json.loads((new / acct.name / "tokens.json").read_text())
    assert tokens_after["tokens"].keys() == tokens_before["tokens"].keys()


def test_a_fresh_user_gets_a_private_state_dir_under_xdg_state_home(tmp_path):
    env = unreachable_env(tmp_path)
    mp = tmp_path / "mp"
    mp.mkdir()
    result = run_rcfs(["mount", str(mp)], env=env, preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 1 and "cannot reach" in result.stderr, result.stderr
    new = tmp_path / "home" / ".local" / "state" / "rcfs"
    assert new.is_dir() and stat.S_IMODE(new.stat().st_mode) == 0o700
    assert not (tmp_path / "home" / ".cache" / "rcfs").exists()


def test_version(tmp_path):
    from importlib.metadata import version

    result = run_rcfs(["--version"], env=user_env(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == f"rcfs {version('rcfs')}", result


def test_help_names_the_state_dir_and_the_log_file_mode(tmp_path):
    out = run_rcfs(["mount", "--help"], env=user_env(tmp_path)).stdout
    assert str(tmp_path / "home" / ".local" / "state" / "rcfs") in "".join(out.split())  # wrapped at hyphens
    assert "0600" in out
    assert "--outbox-settle SECONDS" in out and "(default: 5)" in " ".join(out.split())
