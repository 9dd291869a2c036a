"""The bearer token goes to exactly the configured origins: scheme, host AND port
(issue 20 item 5). On loopback another port is another service, any local user's: an
attachment URI in the API's JSON that names 127.0.0.1 on a port that is neither the
platform's nor the media host's must get no token, not even a connection, and reading
that file fails cleanly (EIO) while the others read."""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest

from conftest import build_config
from accounthelp import expected_bytes
from fusehelp import fuse_required, mount_log, mounted
from rcfs.api.client import Credentials, RingCentralClient, UntrustedURL
from rcfs.emulator import seed

pytestmark = fuse_required


class Listener:
    """A loopback TCP listener that records what each connection sent."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    self.received.append(b"")

    def __enter__(self) -> "Listener":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_a_uri_on_another_loopback_port_gets_no_token_and_reads_fail_cleanly(start_emulator, tmp_path):
    options = dict(window=1.0, limit_medium=1000)
    with Listener() as listener:
        # Same scheme and host as the platform (http://127.0.0.1), another port.
        srv = start_emulator(foreign_media_rate=0.5, foreign_media_base=f"http://127.0.0.1:{listener.port}",
                             **options)
        store = seed.build_store(build_config(**options))
        mnt = tmp_path / "m"
        with mounted(mnt, state_dir=tmp_path / "s", server_url=srv.platform, client_id=srv.client_id,
                     client_secret=srv.client_secret, jwt=srv.jwt):
            refused = ok = 0
            for path in sorted((mnt / "faxes").iterdir()):
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    assert exc.errno == errno.EIO, path
                    refused += 1
                else:
                    assert data == expected_bytes(store, path), path  # the media host still serves
                    ok += 1
            time.sleep(0.3)  # (a connection made anyway would have been recorded by now)
            log = mount_log(mnt)
        assert refused and ok
        assert listener.received == []  # not a connection, let alone a token
        assert "refusing to send the access token" in log and f"127.0.0.1:{listener.port}" in log


@pytest.mark.parametrize("url, trusted", [
    ("https://platform.example.com/restapi/v1.0/x", True),
    ("https://platform.example.com:443/restapi/v1.0/x", True),  # the default port spelled out
    ("https://media.example.com/restapi/v1.0/x", True),  # the platform's media twin
    ("https://platform.example.com:8443/restapi/v1.0/x", False),  # same host, another port
    ("http://platform.example.com/restapi/v1.0/x", False),  # same host, another scheme
    ("https://media.example.com:444/x", False),
    ("https://evil.example.com/x", False),
    ("http://127.0.0.1:4000/x", True),  # the configured media origin
    ("http://127.0.0.1:4001/x", False),  # a port next to it
    ("http://127.0.0.1/x", False),
    ("https://platform.example.com:99999/x", False),  # no valid port at all
])
def test_only_configured_origins_are_trusted(url, trusted):
    creds = Credentials("https://platform.example.com", "id", "secret", "jwt", media_url="http://127.0.0.1:4000")
    client = RingCentralClient(creds)
    if trusted:
        client.check_url(url)
    else:
        with pytest.raises(UntrustedURL):
            client.check_url(url)
