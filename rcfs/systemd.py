"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET.

systemd starts a Type=notify unit with NOTIFY_SOCKET set to a unix datagram socket
(a path, or an abstract name written with a leading "@"); the service reports
"READY=1" there once it serves. Outside systemd the variable is unset and this does
nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send `message` (e.g. "READY=1") to the service manager; False when not under one."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(2.0)  # a datagram to a local socket; never wait on it for long
            sock.sendto(message.encode(), address)
        return True
    except OSError as exc:
        log.warning("could not notify the service manager: %s", exc)
        return False
