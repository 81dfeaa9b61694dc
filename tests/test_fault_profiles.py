"""The fault server's capacity and realistic-latency profiles, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.remote import RemoteFaultServer

HEADERS = {"Authorization": "Bearer sk-or-v1-TESTKEY"}
MESSAGES = [{"role": "user", "content": "judge this"}]


def client(server: FaultServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=HEADERS, trust_env=False)


async def burst(url: str, count: int, tag: str) -> list[httpx.Response]:
    """``count`` different chat requests sent at once."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as client:
        return await asyncio.gather(
            *(
                client.post(
                    url + "/chat/completions",
                    json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} {i}"}]},
                    headers=HEADERS,
                )
                for i in range(count)
            )
        )


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return counts


def test_capacity_admits_at_most_c_and_refuses_the_rest_at_once() -> None:
    """Capacity 4, 10 requests at once: 4 answered after the latency, 6 refused at once with 429 + Retry-After."""
    with FaultServer("capacity", capacity=4, latency_s=0.5, retry_after_s=1.0) as server:
        started = time.monotonic()
        responses = asyncio.run(burst(server.url, 10, "cap"))
        assert statuses(responses) == {200: 4, 429: 6}
        refused = [r for r in responses if r.status_code == 429]
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert all(r.elapsed.total_seconds() < 0.4 for r in refused)  # not held for the 0.5 s latency
        assert time.monotonic() - started >= 0.5
        stats = server.stats()
    assert (stats["capacity"], stats["peak_admitted"], stats["admitted"], stats["capacity_refusals"]) == (4, 4, 0, 6)
    assert stats["faults"] == {"ok": 4, "http_429": 6}


@pytest.mark.slow
def test_capacity_changes_while_running() -> None:
    """Halved from 6 to 3 between two bursts (method, then admin endpoint): each burst gets what C allows."""
    with FaultServer("capacity", capacity=6, latency_s=0.2) as server:
        assert statuses(asyncio.run(burst(server.url, 8, "first"))) == {200: 6, 429: 2}
        server.set_capacity(3)
        assert statuses(asyncio.run(burst(server.url, 8, "second"))) == {200: 3, 429: 5}
        root = server.url.removesuffix("/api/v1")
        request = urllib.request.Request(root + "/_capacity", data=json.dumps({"capacity": 5}).encode())
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as answer:
            assert json.loads(answer.read()) == {"capacity": 5}
        assert statuses(asyncio.run(burst(server.url, 8, "third"))) == {200: 5, 429: 3}
        assert server.stats()["peak_admitted"] == 6


def test_capacity_rejects_nonsense() -> None:
    """A capacity below 1 is refused, at construction, by method and over HTTP (400)."""
    with pytest.raises(ValueError, match="capacity=0"):
        FaultServer("capacity", capacity=0)
    with FaultServer("capacity") as server:
        assert server.stats()["capacity"] == 100
        with pytest.raises(ValueError, match="capacity=-2"):
            server.set_capacity(-2)
        response = httpx.post(server.url.removesuffix("/api/v1") + "/_capacity", json={"c": 1}, trust_env=False)
        assert response.status_code == 400
        assert server.stats()["capacity"] == 100


def test_retry_before_retry_after_is_a_violation() -> None:
    """A refused request repeated sooner than its Retry-After is counted as a violation."""
    with FaultServer("capacity", capacity=1, latency_s=0.3, retry_after_s=1.0) as server:
        body: dict[str, Any] = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]}

        async def run() -> list[int]:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                other = {**body, "messages": [{"role": "user", "content": "hold the one slot"}]}
                hold = asyncio.create_task(client.post(server.url + "/chat/completions", json=other, headers=HEADERS))
                await asyncio.sleep(0.05)
                first = await client.post(server.url + "/chat/completions", json=body, headers=HEADERS)
                second = await client.post(server.url + "/chat/completions", json=body, headers=HEADERS)
                return [(await hold).status_code, first.status_code, second.status_code]

        assert asyncio.run(run()) == [200, 429, 429]
        assert server.stats()["retry_after_violations"] == 1


def test_a_duplicate_sent_before_the_refusal_went_out_is_no_violation() -> None:
    """A hedge-like duplicate that reaches the server while the first request's late 429 is still on its way could
    not know of it: not a violation; the same prompt sent again after that 429, inside its Retry-After, is one."""
    with FaultServer("throttle-late", latency_s=0.3, retry_after_s=1.0) as server:
        server.script("http_429", "ok", "ok")
        body: dict[str, Any] = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "twice"}]}

        async def run() -> list[int]:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                url = server.url + "/chat/completions"
                refused = asyncio.create_task(client.post(url, json=body, headers=HEADERS))
                await asyncio.sleep(0.1)
                duplicate = await client.post(url, json=body, headers=HEADERS)
                first = await refused
                before = server.stats()["retry_after_violations"]
                again = await client.post(url, json=body, headers=HEADERS)
                after = server.stats()["retry_after_violations"]
                return [first.status_code, duplicate.status_code, again.status_code, before, after]

        assert asyncio.run(run()) == [429, 200, 200, 0, 1]


def test_every_client_asking_the_same_prompt_meets_the_same_faults() -> None:
    """Faults are keyed on the prompt (model and messages), not the body's bytes: a body with other fields, another
    key order and the model without its provider prefix (as LiteLLM sends it) meets the same seeded faults."""

    def statuses(shape: Callable[[str], dict[str, Any]]) -> list[int]:
        with FaultServer("ratelimit", seed=4, latency_s=0.0, retry_after_s=0.0) as server, client(server) as http:
            return [
                http.post("/chat/completions", json=shape(f"rubric {i}")).status_code
                for i in range(20)
                for _ in range(3)
            ]

    def ours(prompt: str) -> dict[str, Any]:
        return {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "temperature": 0}

    def litellms(prompt: str) -> dict[str, Any]:
        return {"stream": False, "messages": [{"role": "user", "content": prompt}], "model": "gpt-4o-mini", "n": 1}

    seen = statuses(ours)
    assert seen == statuses(litellms)
    assert 0.3 < seen.count(429) / len(seen) < 0.9  # the profile's faults, not a server that answers everything


@pytest.mark.slow
def test_clean_500ms_answers_in_500_plus_minus_100_ms() -> None:
    """Every answer of clean-500ms takes 0.4-0.6 s, the same for the same request, and they differ."""
    with FaultServer("clean-500ms") as server:
        started = time.monotonic()
        responses = asyncio.run(burst(server.url, 20, "judge"))
        wall = time.monotonic() - started
        assert statuses(responses) == {200: 20}
        took = [r.elapsed.total_seconds() for r in responses]
        assert min(took) >= 0.39
        assert max(took) < 1.5  # 0.6 s plus generous room for a busy machine
        assert len({round(t, 2) for t in took}) > 5  # spread, not one fixed latency
        assert wall < 3.0  # served in parallel
        assert server.stats()["capacity"] is None


def test_an_explicit_latency_replaces_the_profiles() -> None:
    """latency_s given: that latency, whatever the profile says."""
    with FaultServer("clean-500ms", latency_s=0.0) as server:
        responses = asyncio.run(burst(server.url, 5, "fast"))
        assert max(r.elapsed.total_seconds() for r in responses) < 0.3


@pytest.mark.slow
def test_remote_capacity_server_is_controlled_over_http() -> None:
    """The child-process server takes --capacity, changes it on request and reports admissions."""
    with RemoteFaultServer("capacity", capacity=2, latency_s=0.3) as server:
        assert statuses(asyncio.run(burst(server.url, 5, "remote"))) == {200: 2, 429: 3}
        server.set_capacity(4)
        assert statuses(asyncio.run(burst(server.url, 5, "remote again"))) == {200: 4, 429: 1}
        stats = server.stats()
    assert (stats["capacity"], stats["peak_admitted"], stats["capacity_refusals"]) == (4, 4, 4)


def test_catalogue_models_fail_their_way_and_other_models_meet_the_profile() -> None:
    """Per model name the server fails as OpenRouter does; a known model answers with its provider; counts per model."""
    with (
        FaultServer("clean", latency_s=0.3) as srv,
        client(srv) as http,
    ):
        started = time.monotonic()
        refused = http.post("/chat/completions", json={"model": "test/no-provider", "messages": MESSAGES})
        assert time.monotonic() - started < 0.25  # routing refusals come at once, before any model runs
        assert refused.status_code == 503
        assert "No available model provider" in refused.json()["error"]["message"]
        truncated = http.post(
            "/chat/completions", json={"model": "test/reasoning-truncates", "messages": MESSAGES, "max_tokens": 800}
        ).json()["choices"][0]
        assert (truncated["finish_reason"], truncated["message"]["content"]) == ("length", None)
        assert truncated["message"]["reasoning"]
        answer = http.post("/chat/completions", json={"model": "openai/gpt-4o-mini", "messages": MESSAGES}).json()
        assert answer["provider"] == "OpenAI"
        assert answer["choices"][0]["message"]["content"]
        assert srv.stats()["per_model"] == {
            "test/no-provider": 1,
            "test/reasoning-truncates": 1,
            "openai/gpt-4o-mini": 1,
        }


def test_free_quota_is_spent_until_its_reset_then_answers() -> None:
    """The free model: 429 with X-RateLimit-* (reset as ms epoch) and no Retry-After until the reset; then 200."""
    with (
        FaultServer("clean", quota_reset_s=0.5) as srv,
        client(srv) as http,
    ):
        body = {"model": "test/free-quota:free", "messages": MESSAGES}
        spent = http.post("/chat/completions", json=body)
        assert spent.status_code == 429
        assert "retry-after" not in spent.headers
        assert spent.headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(spent.headers["x-ratelimit-reset"]) / 1000 - time.time() <= 0.5
        assert spent.json()["error"]["metadata"]["headers"]["X-RateLimit-Remaining"] == "0"
        time.sleep(0.6)
        assert http.post("/chat/completions", json=body).status_code == 200


def test_keepalive_model_sends_whitespace_before_its_json() -> None:
    """The keep-alive model: status 200 at once, then whitespace, then a JSON document that parses."""
    with (
        FaultServer("clean", keepalive_s=0.6) as srv,
        client(srv) as http,
    ):
        with http.stream("POST", "/chat/completions", json={"model": "test/keepalive", "messages": MESSAGES}) as r:
            assert r.status_code == 200
            raw = r.read()
        assert raw.startswith(b"\n")
        assert json.loads(raw)["choices"][0]["message"]["content"]
