"""Opt-in Prometheus exporter: with ``RESILIENT_LLM_METRICS_PORT`` set, the process serves ``/metrics``.

Each engine owns a ``CollectorRegistry`` (never prometheus-client's global one, so engines and tests do not collide)
holding one collector that turns the engine's ``Metrics`` totals into Prometheus series at scrape time. The HTTP
server is started once per process and address, on first use; it serves the registry of the engine attached to it
(the last one started with that address; a closed engine detaches and the page goes empty until the next one). A
forked child does not inherit the server thread: it closes its copy of the listening socket and starts its own on
first use, which only works if the parent no longer holds the port (give each process its own port). A port that is
taken is logged (``metrics_port_in_use``) and the engine runs without the exporter: metrics never stop a training run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resilient_llm.errors import ConfigError
from resilient_llm.recorder import BREAKER_STATES, BUCKETS_S, Gauges, Metrics, Totals, sources
from resilient_llm.validation import Check, Validated, int_in, setting

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def _bindable(value: str) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOST_NAME.match(value))


BIND_ADDRESS: Check[str] = Check("an IP address or host name to listen on, e.g. 127.0.0.1 or 0.0.0.0", str, _bindable)


@dataclass(frozen=True)
class MetricsConfig(Validated):
    """Where the Prometheus exporter listens; no port: no exporter."""

    port: int | None = setting(None, int_in(1, 65535), optional=True)
    host: str = setting("127.0.0.1", BIND_ADDRESS)


class _Collector:
    """One engine's series, built from its totals at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return _families(self._metrics.totals(), self._metrics.gauges())

    def describe(self) -> Iterator[Metric]:  # the names, for the registry (read before the engine has a stack)
        return _families(Totals(), Gauges())


def _families(totals: Totals, gauges: Gauges) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    calls = CounterMetricFamily(
        "resilient_llm_calls", "Calls by model, route and outcome.", labels=["model", "route", "outcome"]
    )
    for (model, route, outcome), count in sorted(totals.calls.items()):
        calls.add_metric([model, route, outcome], count)
    yield calls
    durations = HistogramMetricFamily(
        "resilient_llm_call_duration_seconds", "Call duration, all attempts and waits.", labels=["model", "outcome"]
    )
    for (model, outcome), histogram in sorted(totals.durations.items()):
        running, buckets = 0, []
        for bound, count in zip((*map(str, BUCKETS_S), "+Inf"), histogram.counts, strict=True):
            running += count
            buckets.append((bound, running))
        durations.add_metric([model, outcome], buckets, histogram.total_s)
    yield durations
    attempts = CounterMetricFamily(
        "resilient_llm_attempts", "Upstream attempts (requests) made by calls; cache hits make none.", labels=["model"]
    )
    for model, count in sorted(totals.attempts.items()):
        attempts.add_metric([model], count)
    yield attempts
    tokens = CounterMetricFamily("resilient_llm_tokens", "Tokens of fresh answers.", labels=["model", "type"])
    for (model, kind), count in sorted(totals.tokens.items()):
        tokens.add_metric([model, kind], count)
    yield tokens
    cost = CounterMetricFamily("resilient_llm_cost_usd", "Cost of fresh answers, as reported.", labels=["model"])
    for model, value in sorted(totals.cost_usd.items()):
        cost.add_metric([model], value)
    yield cost
    cache = CounterMetricFamily("resilient_llm_cache_lookups", "Response cache lookups by result.", labels=["result"])
    for result, count in sorted(totals.cache.items()):
        cache.add_metric([result], count)
    yield cache
    yield GaugeMetricFamily("resilient_llm_in_flight", "Attempts holding a concurrency slot.", gauges.in_flight)
    yield GaugeMetricFamily(
        "resilient_llm_concurrency_limit", "Concurrency slots attempts are held against.", gauges.concurrency_limit
    )
    state = BREAKER_STATES.get(gauges.breaker_state, -1)
    yield GaugeMetricFamily("resilient_llm_breaker_state", "OpenRouter breaker: 0 closed, 1 half-open, 2 open.", state)
    yield CounterMetricFamily(
        "resilient_llm_breaker_trips", "Times the OpenRouter breaker opened.", gauges.breaker_trips
    )
    for name, source in sorted(sources().items()):
        for counter, count in sorted(source.read().items()):
            yield CounterMetricFamily(f"resilient_llm_{counter}", f"{counter} (from {name}).", count)


class _Front:
    """What a process's HTTP server serves: the registry of the engine attached to it, or nothing."""

    def __init__(self) -> None:
        self.attached: CollectorRegistry | None = None

    def collect(self) -> Iterable[Metric]:
        attached = self.attached
        return [] if attached is None else attached.collect()

    def restricted_registry(self, names: Iterable[str]) -> Any:  # the exposition's ``?name[]=`` filter
        attached = self.attached
        return self if attached is None else attached.restricted_registry(names)


@dataclass
class _Server:
    httpd: WSGIServer
    front: _Front


_servers: dict[tuple[str, int], _Server] = {}
_servers_lock = threading.Lock()


class Exporter:
    """One engine's registry, and its place on the process's HTTP server while the engine runs."""

    def __init__(self, config: MetricsConfig, metrics: Metrics) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ConfigError(
                f"RESILIENT_LLM_METRICS_PORT={config.port} needs prometheus-client: "
                "pip install 'resilient-llm[metrics]' (or unset the variable)",
                field="port",
            ) from None
        self.config = config
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(metrics))
        self._front: _Front | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.config.port is not None
        return self.config.host, self.config.port

    def start(self, log: Any) -> bool:
        """Attach to the process's server for this address, starting it on first use; False when it cannot bind."""
        from prometheus_client import start_http_server

        with _servers_lock:
            server = _servers.get(self.address)
            if server is None:
                front = _Front()
                try:
                    httpd, _ = start_http_server(self.address[1], self.address[0], registry=front)
                except OSError as exc:
                    host, port = self.address
                    log.warning("metrics_port_in_use", host=host, port=port, pid=os.getpid(), error=str(exc))
                    return False
                server = _servers[self.address] = _Server(httpd, front)
            server.front.attached = self.registry
            self._front = server.front
        log.info("metrics_exporter", url=f"http://{_url_host(self.address[0])}:{self.address[1]}/metrics")
        return True

    def stop(self) -> None:
        """Detach from the server (it keeps running for the next engine of this process)."""
        with _servers_lock:
            if self._front is not None and self._front.attached is self.registry:
                self._front.attached = None
            self._front = None


def exporter(config: MetricsConfig, metrics: Metrics) -> Exporter | None:
    """The exporter ``config`` asks for, or None without a port; ConfigError when prometheus-client is missing."""
    return None if config.port is None else Exporter(config, metrics)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _forget_in_child() -> None:
    # The server threads did not survive the fork; close the child's copies of their sockets and start afresh.
    global _servers_lock
    for server in _servers.values():
        server.httpd.socket.close()
    _servers.clear()
    _servers_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
