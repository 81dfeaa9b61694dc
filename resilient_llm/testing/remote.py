"""A fault server in a child process, so its work does not share the client's GIL; controlled over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any


class RemoteFaultServer:
    """A FaultServer in a child process, so its work does not share our GIL; same control surface over HTTP."""

    def __init__(
        self,
        profile: str = "clean",
        *,
        seed: int = 0,
        latency_s: float | None = None,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        capacity: int | None = None,
        quota_reset_s: float = 3600.0,
        reasoning_budget: int = 1000,
        keepalive_s: float = 2.0,
    ) -> None:
        argv = [sys.executable, "-m", "resilient_llm.testing", "--profile", profile, "--seed", str(seed)]
        argv += ["--quota-reset", str(quota_reset_s), "--reasoning-budget", str(reasoning_budget)]
        argv += ["--keepalive", str(keepalive_s)]
        argv += ["--retry-after", str(retry_after_s), "--hang", str(hang_s)]
        argv += [] if latency_s is None else ["--latency", str(latency_s)]
        argv += [] if capacity is None else ["--capacity", str(capacity)]
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self._process.kill()
            raise RuntimeError(f"fault server did not start: {line}")
        self.url = line[1]
        self._root = self.url.removesuffix("/api/v1")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy

    def _call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        with self._opener.open(urllib.request.Request(self._root + path, data=data), timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return dict(self._call("/_stats"))

    def script(self, *kinds: str) -> None:
        self._call("/_script", list(kinds))

    def reset_stats(self) -> None:
        self._call("/_reset", {})

    def set_down(self, down: bool, kind: str = "http_503") -> None:
        """Start or end a manual outage: every request meets ``kind`` ("http_503", "reset", ...) while down."""
        self._call("/_down", {"down": down, "kind": kind})

    def set_capacity(self, capacity: int) -> None:
        self._call("/_capacity", {"capacity": capacity})

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> RemoteFaultServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
