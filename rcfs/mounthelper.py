"""Mounting from /etc/fstab and `mount -t fuse.rcfs`: the helper in the form mount(8) calls.

    # /etc/fstab
    none  /srv/rc  fuse.rcfs  allow_other,uid=1000,gid=1000,_netdev,config=/etc/rcfs/config.toml  0  0

mount(8) runs `/sbin/mount.fuse.rcfs SOURCE DIR -o OPTIONS` when that exists (the
`mount.fuse.rcfs` console script, linked there), and otherwise `mount.fuse3`, which
runs `rcfs SOURCE DIR -o OPTIONS` through /bin/sh with mount's PATH; `rcfs.cli` hands
that form (a first argument that is not a subcommand) to `main` here. Either way the
result is `rcfs mount --daemon`, which returns once the filesystem serves, as mount(8)
expects of a helper.

Credentials come only from the config file named by `config=` (default
/etc/rcfs/config.toml for root, else the user's): never from the fstab line, which every
user can read, and not from the environment either, so a boot-time mount does not depend
on what the shell that ran `mount -a` happened to export.
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from pathlib import Path

SYSTEM_CONFIG = Path("/etc/rcfs/config.toml")

# Options for mount(8) itself, the kernel's generic flags or fstab bookkeeping: accepted
# and left alone (FUSE mounts are nodev,nosuid anyway).
IGNORED = {"defaults", "rw", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev",
           "nofail", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
           "strictatime", "nodiratime", "sync", "async", "dirsync", "silent", "loud"}
SECRETS = {"client_secret", "jwt", "jwt_file", "password", "client_id", "token"}
# option=value -> `rcfs mount` flag
VALUED = {"config": "--config", "state_dir": "--state-dir", "since": "--since", "cache_size": "--cache-size",
          "log_file": "--log-file", "listing_ttl": "--listing-ttl", "recordings_ttl": "--recordings-ttl",
          "server_url": "--server-url", "outbox_settle": "--outbox-settle", "shared_budget": "--shared-budget"}


class HelperError(Exception):
    pass


def _user_id(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise HelperError(f"uid={value}: no such user") from None


def _group_id(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise HelperError(f"gid={value}: no such group") from None


def parse(argv: list[str]) -> tuple[str, list[str]]:
    """mount(8)'s helper arguments -> (mountpoint, the `rcfs mount` argument list)."""
    positional: list[str] = []
    options: list[str] = []
    verbose = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-o":
            if i + 1 >= len(argv):
                raise HelperError("-o needs a value")
            options.extend(o for o in argv[i + 1].split(",") if o)
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            options.extend(o for o in arg[2:].split(",") if o)
        elif arg in ("-t", "-N"):
            i += 1  # the type (fuse.rcfs) / a namespace: nothing for us
        elif arg.startswith("-") and len(arg) > 1:
            verbose = verbose or "v" in arg  # -s -f -n -v from mount(8)
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        raise HelperError("usage: mount.fuse.rcfs SOURCE MOUNTPOINT [-o OPTIONS]  (SOURCE is ignored: "
                          "write 'none' or 'rcfs'; the account comes from config=FILE)")
    mountpoint = positional[1]
    args = ["mount", mountpoint, "--daemon"]
    seen: dict[str, str] = {}
    for opt in options:
        name, _, value = opt.partition("=")
        if name in SECRETS:
            raise HelperError(f"option {name}= is not accepted on a mount line (anyone can read /etc/fstab "
                              "and the process list); put it in the config file named by config=")
        if name in IGNORED or name.startswith("x-") or name == "comment":
            continue
        if name == "ro":
            args.append("--read-only")
        elif name == "allow_other":
            args.append("--allow-other")
        elif name == "nonempty":
            args.append("--nonempty")
        elif name == "uid":
            args += ["--uid", str(_user_id(value))]
        elif name == "gid":
            args += ["--gid", str(_group_id(value))]
        elif name in VALUED:
            if not value:
                raise HelperError(f"option {name}= needs a value")
            args += [VALUED[name], value]
        else:
            raise HelperError(f"unknown option {opt!r} (known: allow_other, ro, uid=, gid=, "
                              f"{'=, '.join(sorted(VALUED))}=, and mount(8)'s generic options)")
        seen[name] = value
    if "config" not in seen:
        config = SYSTEM_CONFIG if os.geteuid() == 0 else None
        if config is not None:
            args += ["--config", str(config)]
    if verbose:
        args.append("--verbose")
    return mountpoint, args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _, args = parse(argv)
    except HelperError as exc:
        print(f"mount.fuse.rcfs: {exc}", file=sys.stderr)
        return 1  # mount(8): "incorrect invocation or permissions"
    # Only the config file: see the module docstring.
    for name in ("RC_CLIENT_ID", "RC_CLIENT_SECRET", "RC_JWT", "RC_SERVER_URL", "RC_MEDIA_URL", "RCFS_REDIS_PASSWORD"):
        os.environ.pop(name, None)
    from .cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
