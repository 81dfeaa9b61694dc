"""The cache against tampering and mix-ups: key fields cannot be overridden, planted entries are dropped, replay
never reaches the network."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import diskcache
import pytest

from resilient_llm import ChatRequest, Engine, Outcome
from resilient_llm.errors import MalformedResponse
from resilient_llm.policy.cache import cache_key, decode_answer
from resilient_llm.protocol import request_body
from resilient_llm.testing.fault_server import FaultServer
from tests.conftest import MODEL, call_lines

BASE = "https://openrouter.ai/api/v1"
REQUEST = ChatRequest(model=MODEL, messages=({"role": "user", "content": "q"},), temperature=0)


def key_of(server: FaultServer, user: str) -> str:
    return cache_key(ChatRequest(model=MODEL, messages=({"role": "user", "content": user},), temperature=0), server.url)


def test_an_extra_body_field_cannot_override_a_key_field() -> None:
    """extra_body={'base_url': X} at base A is not the same call as a plain call at base X; ordinary keys are
    unchanged (v1: existing caches stay valid)."""
    other = "http://127.0.0.1:1/v1"
    tricked = ChatRequest(model=MODEL, messages=REQUEST.messages, temperature=0, extra_body={"base_url": other})
    assert cache_key(tricked, BASE) != cache_key(REQUEST, other)
    assert cache_key(tricked, BASE) != cache_key(tricked, other)
    canonical = json.dumps({"base_url": BASE, **request_body(REQUEST)}, sort_keys=True, separators=(",", ":"))
    assert cache_key(REQUEST, BASE) == "v1:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_a_call_to_another_endpoint_is_not_served_the_answer_of_one_naming_it(
    make_engine: Callable[..., Engine], cache_dir: Path
) -> None:
    """Two real endpoints sharing a cache: a call to A carrying an extra 'base_url' field naming B is a miss, sent
    to A, not B's cached answer."""
    with FaultServer("clean") as a, FaultServer("clean") as b:
        at_b = make_engine(base_url=b.url, cache_mode="read-write", cache_dir=str(cache_dir))
        assert at_b.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK
        at_a = make_engine(base_url=a.url, cache_mode="read-write", cache_dir=str(cache_dir))
        result = at_a.complete(MODEL, user="q", temperature=0, extra_body={"base_url": b.url})
        assert result.outcome is Outcome.OK
        assert a.stats()["requests"] == 1


@pytest.mark.parametrize(
    "entry",
    [
        {"text": "hi", "model": MODEL, "response_id": None, "usage": ["10", "2", "12", "0.1"]},
        {"text": "hi", "model": MODEL, "response_id": 7, "usage": [1, 2, 3, None]},
        {"text": "hi", "model": MODEL, "response_id": None, "usage": [1, 2, 3, float("inf")]},
        {"text": "hi", "model": MODEL, "response_id": None, "usage": [True, 2, 3, None]},
        {"text": "hi", "model": MODEL, "response_id": None, "usage": {"prompt_tokens": 1}},
        ["not", "an", "object"],
    ],
)
def test_entries_of_the_wrong_shape_are_refused(entry: object) -> None:
    """Token counts are integers, the cost a finite number, the response id text: anything else is unreadable."""
    with pytest.raises(MalformedResponse):
        decode_answer(json.dumps(entry).encode(), "cache:disk")


@pytest.mark.parametrize(
    "planted",
    [
        json.dumps({"text": "hi", "model": MODEL, "usage": ["10", "2", "12", None]}).encode(),
        b"\xff not json",
        "a str, not bytes",
        ("a", "pickled", "tuple"),
    ],
    ids=["string token counts", "not json", "text value", "pickle"],
)
def test_a_planted_entry_is_dropped_and_the_store_keeps_serving(
    planted: object, server: FaultServer, cached_engine: Callable[..., Engine], cache_dir: Path
) -> None:
    """The bad entry is a miss, replaced by the fresh answer; other entries are still served right after (the
    store is not paused for a bad entry)."""
    engine = cached_engine()
    assert engine.complete(MODEL, user="good", temperature=0).outcome is Outcome.OK
    with diskcache.Cache(str(cache_dir)) as cache:
        cache.set(key_of(server, "q"), planted)
    first = engine.complete(MODEL, user="q", temperature=0)
    assert first.outcome is Outcome.OK
    assert isinstance(first.usage.prompt_tokens, int)
    assert engine.complete(MODEL, user="good", temperature=0).outcome is Outcome.CACHED
    assert engine.complete(MODEL, user="q", temperature=0).outcome is Outcome.CACHED
    assert engine.cache_counters["dropped"] == 1
    assert server.stats()["requests"] == 2


def test_replay_drops_a_planted_entry_and_ends_neutral(
    server: FaultServer, cached_engine: Callable[..., Engine], cache_dir: Path
) -> None:
    """In replay a planted entry is a replay miss (and gone), never served."""
    with diskcache.Cache(str(cache_dir)) as cache:
        cache.set(key_of(server, "q"), b'{"text": "hi", "model": "m", "usage": ["1", 2, 3, null]}')
    replayer = cached_engine(cache_mode="replay")
    result = replayer.complete(MODEL, user="q", temperature=0)
    assert (result.outcome, result.cache) == (Outcome.NEUTRAL, "replay_miss")
    with diskcache.Cache(str(cache_dir)) as cache:
        assert key_of(server, "q") not in cache


@pytest.mark.parametrize("temperature", [0.7, None])
def test_replay_never_reaches_the_network_whatever_the_temperature(
    temperature: float | None, server: FaultServer, cached_engine: Callable[..., Engine], log_path: Path
) -> None:
    """Sampled or unset temperature in replay: looked up like any call; a miss ends neutral with route replay,
    and the server sees nothing."""
    replayer = cached_engine(cache_mode="replay", neutral_text="NEUTRAL")
    result = replayer.complete(MODEL, user="sampled", temperature=temperature)
    assert (result.outcome, result.text, result.route, result.cache) == (
        Outcome.NEUTRAL,
        "NEUTRAL",
        "replay",
        "replay_miss",
    )
    assert server.stats()["requests"] == 0
    assert call_lines(log_path)[-1]["route"] == "replay"


def test_replay_serves_sampled_answers_a_sampled_recording_stored(
    server: FaultServer, cached_engine: Callable[..., Engine]
) -> None:
    """A run recorded with RESILIENT_LLM_CACHE_SAMPLED=true replays its sampled calls too, offline."""
    recorded = cached_engine(cache_sampled=True).complete(MODEL, user="sampled", temperature=0.7).text
    server.reset_stats()
    replayed = cached_engine(cache_mode="replay").complete(MODEL, user="sampled", temperature=0.7)
    assert (replayed.outcome, replayed.text) == (Outcome.CACHED, recorded)
    assert server.stats()["requests"] == 0
