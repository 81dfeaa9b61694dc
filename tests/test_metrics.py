"""Metrics for the training loop: the snapshot since the last one, and the Prometheus exporter scraped over HTTP."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import re
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import resilient_llm
from resilient_llm import CallFailed, ChatResult, Config, ConfigError, Engine, Outcome, Secret
from resilient_llm import recorder as recorder_module
from resilient_llm.dropin import run_utils
from resilient_llm.recorder import Gauges, Metrics, Source, register_source
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import API_KEY, MODEL, fast_config, read_log

OUTCOMES = ("ok", "cached", "fallback", "neutral", "error", "cancelled")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def scrape(port: int) -> dict[str, list[Any]]:
    """The exporter's page over real HTTP, as samples by metric family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def calls_by_outcome(page: dict[str, list[Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for sample in page.get("resilient_llm_calls", []):
        counts[sample.labels["outcome"]] += int(sample.value)
    return counts


@pytest.fixture
def other_provider() -> Iterator[FaultServer]:
    with FaultServer("clean") as srv:
        yield srv


def mixed_calls(engine: Engine, server: FaultServer) -> tuple[Counter[str], list[ChatResult]]:
    """One call of every outcome (two fresh answers more), against the real server; what each call ended as."""
    outcomes: Counter[str] = Counter()
    results = [engine.complete(MODEL, user="plain")]
    server.script("http_500")
    results.append(engine.complete(MODEL, user="after a 500"))  # ok, two attempts
    results.append(engine.complete(MODEL, user="deterministic", temperature=0))  # ok, stored
    results.append(engine.complete(MODEL, user="deterministic", temperature=0))  # cached
    server.script("http_402")
    results.append(engine.complete(MODEL, user="out of credits"))  # fallback: the other provider answers
    server.script("http_401")
    results.append(engine.complete(MODEL, user="bad key", raise_caller_errors=False))  # neutral
    outcomes.update(str(r.outcome) for r in results)
    server.script("http_401")
    with pytest.raises(CallFailed):
        engine.complete(MODEL, user="bad key, raised")
    outcomes["error"] += 1
    server.script("hang")
    future = engine.submit(engine.request(MODEL, user="hangs, then cancelled"))
    wait_for(lambda: server.stats()["in_flight"] == 1)
    future.cancel()
    wait_for(lambda: engine.outcomes["cancelled"] == 1)
    outcomes["cancelled"] += 1
    return outcomes, results


def test_snapshot_counts_add_up_to_the_calls_and_match_their_outcomes(
    server: FaultServer, other_provider: FaultServer, make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """N calls of mixed outcomes: the snapshot's counts add up to N, match each outcome, and its ratios follow."""
    engine = make_engine(
        cache_mode="read-write",
        cache_dir=str(tmp_path / "cache"),
        fallback_model="openai/gpt-4o-mini",
        fallback_base_url=other_provider.url,
        fallback_api_key=Secret("sk-other-provider"),
    )
    expected, results = mixed_calls(engine, server)
    assert set(expected) == set(OUTCOMES)
    snap = engine.metrics()
    n = sum(expected.values())
    assert snap["llm/calls"] == n == sum(snap[f"llm/calls_{o}"] for o in OUTCOMES)
    assert {o: snap[f"llm/calls_{o}"] for o in OUTCOMES} == {o: expected[o] for o in OUTCOMES}
    assert snap["llm/ok_share"] == pytest.approx(expected["ok"] / n)
    assert snap["llm/success_rate"] == pytest.approx((expected["ok"] + expected["cached"] + expected["fallback"]) / n)
    fresh = [r for r in results if r.outcome in (Outcome.OK, Outcome.FALLBACK)]
    assert snap["llm/prompt_tokens"] == sum(r.usage.prompt_tokens or 0 for r in fresh)
    assert snap["llm/completion_tokens"] == sum(r.usage.completion_tokens or 0 for r in fresh)
    assert snap["llm/cost_usd"] == pytest.approx(sum(r.usage.cost or 0.0 for r in fresh))
    assert snap["llm/attempts"] == sum(r.attempts for r in results) + 1  # + the raised call's one attempt
    assert snap["llm/attempts_per_call"] == pytest.approx(snap["llm/attempts"] / (n - 1))  # the cancelled: unknown
    assert (snap["llm/cache_lookups"], snap["llm/cache_hits"], snap["llm/cache_hit_rate"]) == (2, 1, 0.5)
    p50, p95, p99, slowest = (snap[f"llm/latency_{q}_s"] for q in ("p50", "p95", "p99", "max"))
    assert 0 < p50 <= p95 <= p99 <= slowest
    assert (snap["llm/breaker_state"], snap["llm/breaker_trips"], snap["llm/in_flight"]) == (0, 0, 0)
    assert snap["llm/concurrency_limit"] == 20
    assert all(isinstance(v, (int, float)) and key.startswith("llm/") for key, v in snap.items())


def test_a_second_snapshot_holds_only_what_happened_since_the_first(
    server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """Each snapshot starts where the previous one ended; with nothing new, counts are 0 and ratios are left out."""
    engine = make_engine(neutral_text="N")
    server.script("http_401")
    engine.complete(MODEL, user="neutral", raise_caller_errors=False)
    engine.complete(MODEL, user="ok")
    first = engine.metrics()
    assert (first["llm/calls"], first["llm/calls_neutral"], first["llm/calls_ok"]) == (2, 1, 1)
    for i in range(3):
        engine.complete(MODEL, user=f"later {i}")
    second = engine.metrics()
    assert (second["llm/calls"], second["llm/calls_ok"], second["llm/calls_neutral"]) == (3, 3, 0)
    assert (second["llm/ok_share"], second["llm/attempts"]) == (1.0, 3)
    empty = engine.metrics()
    assert empty["llm/calls"] == 0
    assert not {"llm/ok_share", "llm/latency_p50_s", "llm/attempts_per_call", "llm/cache_hit_rate"} & set(empty)


def test_snapshots_from_another_thread_lose_and_double_no_call(make_engine: Callable[..., Engine]) -> None:
    """Calls finishing on the engine thread while a trainer thread snapshots: the snapshots add up to every call."""
    engine = make_engine()
    seen: list[float] = []
    done = threading.Event()

    def trainer() -> None:
        while not done.wait(0.002):
            seen.append(engine.metrics()["llm/calls"])

    watcher = threading.Thread(target=trainer)
    watcher.start()

    async def burst() -> None:
        await asyncio.gather(*(engine.acomplete(MODEL, user=f"q{i}") for i in range(120)))

    asyncio.run(burst())
    done.set()
    watcher.join()
    assert sum(seen) + engine.metrics()["llm/calls"] == 120


def test_judge_calls_and_their_neutral_share_come_from_the_drop_in(
    direct_env: None, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's own judge through the drop-in: judge calls and their neutral share in resilient_llm.metrics()."""
    monkeypatch.setenv("RUBRIC_JUDGE_MODEL", MODEL)
    monkeypatch.setenv("RESILIENT_LLM_CACHE", "off")
    assert resilient_llm.metrics() == {}  # no engine yet: nothing to report, and none is started
    run_utils.run_litellm("openai/gpt-4.1", "not a judge call")
    resilient_llm.metrics()
    for i in range(3):
        assert run_utils.run_litellm(MODEL, f"judge {i}").startswith('{"score"')
    server.script("http_401")
    assert run_utils.run_litellm(MODEL, "judge, bad key") == ""
    snap = resilient_llm.metrics()
    assert (snap["llm/calls"], snap["llm/judge_calls"], snap["llm/judge_real"], snap["llm/judge_neutral"]) == (
        4,
        4,
        3,
        1,
    )
    assert snap["llm/judge_neutral_share"] == 0.25
    assert resilient_llm.metrics()["llm/judge_calls"] == 0


def test_a_source_reports_its_growth_and_survives_a_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered source's counters are reported as growth since the last snapshot; a counter reset starts over."""
    monkeypatch.setattr(recorder_module, "_sources", dict(recorder_module._sources))
    counts = {"widget_calls": 5, "widget_bad": 1}
    register_source("widget", Source(lambda: dict(counts), {"widget_bad_share": (("widget_bad",), "widget_calls")}))
    metrics = Metrics()
    counts.update(widget_calls=9, widget_bad=2)
    snap = metrics.snapshot()
    assert (snap["llm/widget_calls"], snap["llm/widget_bad"], snap["llm/widget_bad_share"]) == (4, 1, 0.25)
    assert "llm/widget_bad_share" not in metrics.snapshot()
    counts.update(widget_calls=2, widget_bad=0)  # e.g. a test's reset
    assert metrics.snapshot()["llm/widget_calls"] == 2


def test_latency_sample_is_bounded_and_model_labels_are_capped() -> None:
    """Past the reservoir the percentiles come from a uniform sample; models past the cap are counted as "other"."""
    metrics = Metrics(Gauges, reservoir=200, max_models=2, rng=random.Random(7))
    for i in range(5000):
        metrics.record("ok", i / 5000, f"m{i % 4}", {"route": "openrouter", "attempts": 1})
    snap = metrics.snapshot()
    assert snap["llm/calls"] == 5000
    assert 0.4 < snap["llm/latency_p50_s"] < 0.6
    assert 0.9 < snap["llm/latency_p95_s"] <= snap["llm/latency_p99_s"] <= snap["llm/latency_max_s"] == 4999 / 5000
    totals = metrics.totals()
    assert {model for model, _, _ in totals.calls} == {"m0", "m1", "other"}
    assert sum(totals.calls.values()) == 5000


def test_exporter_serves_the_calls_by_outcome_over_http(
    server: FaultServer, other_provider: FaultServer, make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """Scraped over HTTP: calls by outcome, a duration histogram over all of them, attempts, the gauges."""
    port = free_port()
    engine = make_engine(
        metrics_port=port,
        cache_mode="read-write",
        cache_dir=str(tmp_path / "cache"),
        fallback_model="openai/gpt-4o-mini",
        fallback_base_url=other_provider.url,
        fallback_api_key=Secret("sk-other-provider"),
    )
    expected, _ = mixed_calls(engine, server)
    page = scrape(port)
    assert calls_by_outcome(page) == expected
    routes = {s.labels["route"] for s in page["resilient_llm_calls"]}
    assert {"openrouter", "litellm", "neutral"} <= routes
    counts = [s for s in page["resilient_llm_call_duration_seconds"] if s.name.endswith("_count")]
    assert sum(s.value for s in counts) == sum(expected.values())
    assert {s.labels["result"]: s.value for s in page["resilient_llm_cache_lookups"]}["hit"] == 1
    gauges = {name: page[name][0].value for name in ("resilient_llm_concurrency_limit", "resilient_llm_breaker_state")}
    assert gauges == {"resilient_llm_concurrency_limit": 20, "resilient_llm_breaker_state": 0}
    engine.metrics()  # a snapshot does not touch the running totals Prometheus sees
    assert calls_by_outcome(scrape(port)) == expected


def test_next_engine_on_the_port_takes_over_the_running_server(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """One server per port and process: a closed engine's calls leave the page, the next engine's appear on it."""
    port = free_port()
    first = make_engine(metrics_port=port)
    first.complete(MODEL, user="first")
    assert calls_by_outcome(scrape(port)) == {"ok": 1}
    first.close()
    assert "resilient_llm_calls" not in scrape(port)
    second = make_engine(metrics_port=port)
    for i in range(2):
        second.complete(MODEL, user=f"second {i}")
    assert calls_by_outcome(scrape(port)) == {"ok": 2}
    started = [e for e in read_log(log_path) if e["event"] == "metrics_exporter"]
    assert [e["url"] for e in started] == [f"http://127.0.0.1:{port}/metrics"] * 2


def test_a_taken_port_is_logged_and_the_engine_runs_without_the_exporter(
    server: FaultServer, make_engine: Callable[..., Engine], log_path: Path
) -> None:
    """Metrics never stop a run: a port someone else holds gives one warning line, and calls go on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        engine = make_engine(metrics_port=port)
        assert engine.complete(MODEL, user="q").outcome is Outcome.OK
    (warning,) = [e for e in read_log(log_path) if e["event"] == "metrics_port_in_use"]
    assert (warning["port"], warning["level"]) == (port, "warning")


def _child(url: str, port_taken: int, own_port: int, answered: Any, scraped: Event) -> None:
    with Engine(fast_config(url, metrics_port=port_taken)) as first:  # the parent's port: still taken by the parent
        first_ok = first.complete(MODEL, user="child, first engine").outcome is Outcome.OK
    second = Engine(fast_config(url, metrics_port=own_port))
    answered.put(first_ok and second.complete(MODEL, user="child").outcome is Outcome.OK)
    scraped.wait(30)
    second.close()


def test_a_forked_child_serves_its_own_exporter(server: FaultServer, make_engine: Callable[..., Engine]) -> None:
    """After fork the child does not use the parent's server: on a free port it starts its own, with its own calls."""
    parent_port, child_port = free_port(), free_port()
    parent = make_engine(metrics_port=parent_port)
    parent.complete(MODEL, user="parent")
    context = multiprocessing.get_context("fork")
    answered, scraped = context.Queue(), context.Event()
    child = context.Process(target=_child, args=(server.url, parent_port, child_port, answered, scraped))
    child.start()
    try:
        assert answered.get(timeout=30) is True
        assert calls_by_outcome(scrape(child_port)) == {"ok": 1}
        assert calls_by_outcome(scrape(parent_port)) == {"ok": 1}  # the parent's own call only
    finally:
        scraped.set()
        child.join(30)
    assert child.exitcode == 0


def test_metrics_port_and_host_are_validated() -> None:
    """A port outside 1..65535 or a host that cannot be bound stops start-up naming the variable."""
    for name, value, accepted in (
        ("RESILIENT_LLM_METRICS_PORT", "0", "an integer 1..65535"),
        ("RESILIENT_LLM_METRICS_PORT", "70000", "an integer 1..65535"),
        ("RESILIENT_LLM_METRICS_PORT", "http", "an integer 1..65535"),
        ("RESILIENT_LLM_METRICS_HOST", "local host", "an IP address or host name"),
    ):
        with pytest.raises(ConfigError) as info:
            Config.from_env({"OPENAI_API_KEY": API_KEY, name: value})
        assert name in str(info.value)
        assert accepted in str(info.value)
    config = Config.from_env({"OPENAI_API_KEY": API_KEY, "RESILIENT_LLM_METRICS_PORT": "9464"})
    assert (config.metrics.port, config.metrics.host) == (9464, "127.0.0.1")


def test_port_without_prometheus_client_is_a_config_error(monkeypatch: pytest.MonkeyPatch, server: FaultServer) -> None:
    """The port set but prometheus-client not installed: a ConfigError saying what to install, before any thread."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what an absent package looks like to import
    threads = threading.active_count()
    with pytest.raises(ConfigError, match=r"RESILIENT_LLM_METRICS_PORT=9464 needs prometheus-client.*\[metrics\]"):
        Engine(fast_config(server.url, metrics_port=9464))
    assert threading.active_count() == threads


def test_grafana_dashboard_queries_only_series_the_exporter_serves(
    server: FaultServer, make_engine: Callable[..., Engine]
) -> None:
    """Every series a panel of docs/grafana-dashboard.json queries is on the exporter's page: they cannot drift."""
    port = free_port()
    engine = make_engine(metrics_port=port)
    engine.complete(MODEL, user="q")
    served = {sample.name for samples in scrape(port).values() for sample in samples}
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bresilient_llm_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 10
    assert queried <= served
