"""The response cache: keys, what is cached, modes, single flight, store faults, disk and Redis for real."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm import ChatRequest, Engine, Outcome
from resilient_llm.errors import MalformedResponse
from resilient_llm.policy.cache import cache_key, decode_answer, encode_answer, is_cacheable
from resilient_llm.protocol import parse_response
from resilient_llm.testing.fault_server import FaultServer
from resilient_llm.testing.redis_server import RedisServer
from tests.conftest import API_KEY, MODEL, call_lines, read_log

BASE = "https://openrouter.ai/api/v1"
REQUEST = ChatRequest(model=MODEL, messages=({"role": "user", "content": "q"},), temperature=0.0, max_tokens=8)


def variant(**changes: object) -> ChatRequest:
    import dataclasses

    return dataclasses.replace(REQUEST, **changes)  # type: ignore[arg-type]


def test_key_covers_what_changes_the_answer_and_nothing_else() -> None:
    """Model, messages, sampling, extra body and base URL change the key; timeouts, retries, call id do not."""
    key = cache_key(REQUEST, BASE)
    assert key.startswith("v1:")
    assert len(key) == 3 + 64
    assert cache_key(variant(timeout=5.0, num_retries=0, raise_caller_errors=False), BASE) == key
    assert cache_key(variant(), BASE) == key  # a new call id
    for changed in (
        variant(model="openai/gpt-4.1-mini"),
        variant(messages=({"role": "user", "content": "q "},)),
        variant(temperature=0.5),
        variant(max_tokens=9),
        variant(top_p=0.9),
        variant(extra_body={"seed": 1}),
    ):
        assert cache_key(changed, BASE) != key
    assert cache_key(REQUEST, "http://127.0.0.1:1/v1") != key


def test_only_deterministic_calls_are_cacheable_unless_opted_in() -> None:
    """temperature 0 is cacheable; unset or sampled temperatures only with cache_sampled."""
    assert is_cacheable(REQUEST, cache_sampled=False)
    assert not is_cacheable(variant(temperature=0.7), cache_sampled=False)
    assert not is_cacheable(variant(temperature=None), cache_sampled=False)
    assert is_cacheable(variant(temperature=0.7), cache_sampled=True)


def test_stored_answers_are_json_and_round_trip() -> None:
    """An answer is stored as JSON bytes and comes back as a cached result with usage intact."""
    body = b'{"id":"gen-1","model":"m/x","choices":[{"message":{"content":"hi"}}],'
    body += b'"usage":{"prompt_tokens":2,"cost":0.5}}'
    answer = parse_response(200, {}, body, REQUEST)
    raw = encode_answer(answer)
    assert raw.startswith(b"{")
    back = decode_answer(raw, "cache:disk")
    assert (back.text, back.outcome, back.usage.cost, back.response_id) == ("hi", Outcome.CACHED, 0.5, "gen-1")
    for garbage in (b"\x80\x04pickle", b"{}", b'{"text": "", "model": "m", "usage": [1, 1, 2, 0]}'):
        with pytest.raises(MalformedResponse):
            decode_answer(garbage, "cache:disk")


def test_second_identical_call_is_a_hit(
    server: FaultServer, cached_engine: Callable[..., Engine], log_path: Path
) -> None:
    """The same deterministic call twice: one upstream request, the second answer from the disk cache."""
    engine = cached_engine()
    first = engine.complete(MODEL, user="q", temperature=0)
    second = engine.complete(MODEL, user="q", temperature=0)
    assert (first.outcome, second.outcome) == (Outcome.OK, Outcome.CACHED)
    assert second.text == first.text
    assert second.usage == first.usage
    assert (second.route, second.cache) == ("cache:disk", "hit")
    assert server.stats()["requests"] == 1
    hit = call_lines(log_path)[1]
    assert (hit["outcome"], hit["cache"], hit["route"]) == ("cached", "hit", "cache:disk")
    assert hit["cache_key"] == first.cache_key[:19]  # type: ignore[index]


def test_failures_and_sampled_calls_are_not_cached(server: FaultServer, cached_engine: Callable[..., Engine]) -> None:
    """A neutral result is never stored; calls without temperature 0 bypass the cache."""
    engine = cached_engine(num_retries=0)
    server.script("http_503")
    assert engine.complete(MODEL, user="q", temperature=0).outcome is Outcome.NEUTRAL
    assert engine.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK
    assert engine.complete(MODEL, user="s").outcome is Outcome.OK
    assert engine.complete(MODEL, user="s").outcome is Outcome.OK
    assert server.stats()["requests"] == 4


def test_sampled_calls_are_cached_when_opted_in(server: FaultServer, cached_engine: Callable[..., Engine]) -> None:
    """RESILIENT_LLM_CACHE_SAMPLED=true caches calls at any temperature."""
    engine = cached_engine(cache_sampled=True)
    engine.complete(MODEL, user="s", temperature=0.9)
    assert engine.complete(MODEL, user="s", temperature=0.9).outcome is Outcome.CACHED
    assert server.stats()["requests"] == 1


def test_refresh_skips_reads_but_writes(server: FaultServer, cached_engine: Callable[..., Engine]) -> None:
    """refresh always asks upstream and stores what it gets for the next read-write run."""
    refresher = cached_engine(cache_mode="refresh")
    assert refresher.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK
    assert refresher.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK
    assert cached_engine().complete(MODEL, user="q", temperature=0).outcome is Outcome.CACHED
    assert server.stats()["requests"] == 2


def test_replay_answers_from_the_cache_with_zero_network(
    server: FaultServer, cached_engine: Callable[..., Engine]
) -> None:
    """After a recorded run, replay answers every seen call with the server gone; a miss ends neutral, counted."""
    recorder = cached_engine()
    prompts = [f"rubric {i}" for i in range(20)]
    recorded = [recorder.complete(MODEL, user=p, temperature=0).text for p in prompts]
    url = server.url
    server.stop()
    replayer = cached_engine(cache_mode="replay", base_url=url, neutral_text="NEUTRAL")
    replayed = [replayer.complete(MODEL, user=p, temperature=0) for p in prompts]
    assert [r.text for r in replayed] == recorded
    assert {r.outcome for r in replayed} == {Outcome.CACHED}
    miss = replayer.complete(MODEL, user="never seen", temperature=0)
    assert (miss.outcome, miss.text, miss.cache, miss.attempts) == (Outcome.NEUTRAL, "NEUTRAL", "replay_miss", 0)
    assert replayer.cache_counters["replay_miss"] == 1


def test_identical_calls_in_flight_share_one_upstream_call(cached_engine: Callable[..., Engine]) -> None:
    """Identical calls from several threads and event loops at once make exactly one request."""
    with FaultServer("clean", latency_s=0.3) as slow:
        engine = cached_engine(base_url=slow.url)
        texts: list[str] = []
        barrier = threading.Barrier(4)

        def caller() -> None:
            async def burst() -> list[str]:
                barrier.wait()
                results = await asyncio.gather(*(engine.acomplete(MODEL, user="same", temperature=0) for _ in range(5)))
                return [r.text for r in results]

            texts.extend(asyncio.run(burst()))

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert slow.stats()["requests"] == 1
    assert len(texts) == 20
    assert len(set(texts)) == 1
    assert engine.cache_counters["shared"] + engine.cache_counters["hit"] == 19


def test_a_shared_failure_reaches_every_waiter(cached_engine: Callable[..., Engine]) -> None:
    """When the one upstream call fails for good, every identical waiter gets the neutral result."""
    with FaultServer("clean", latency_s=0.2) as slow:
        engine = cached_engine(base_url=slow.url, num_retries=0, neutral_text="N")
        slow.script("http_503")

        async def burst() -> list[Outcome]:
            results = await asyncio.gather(*(engine.acomplete(MODEL, user="same", temperature=0) for _ in range(5)))
            return [r.outcome for r in results]

        assert asyncio.run(burst()) == [Outcome.NEUTRAL] * 5
        assert slow.stats()["requests"] == 1


def test_corrupted_database_degrades_to_no_cache(
    server: FaultServer, cached_engine: Callable[..., Engine], cache_dir: Path, log_path: Path
) -> None:
    """A garbage cache.db never fails a call; one warning for the fault kind, however many calls."""
    cache_dir.mkdir()
    (cache_dir / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    engine = cached_engine()
    results = [engine.complete(MODEL, user=f"q{i % 2}", temperature=0) for i in range(6)]
    assert {r.outcome for r in results} == {Outcome.OK}
    faults = [line for line in read_log(log_path) if line["event"] == "cache_fault"]
    assert len(faults) == 1
    assert "DatabaseError" in faults[0]["error"]


def test_store_comes_back_by_itself(
    server: FaultServer, cached_engine: Callable[..., Engine], cache_dir: Path, log_path: Path
) -> None:
    """Once the broken directory is usable again, the cache serves without a restart."""
    cache_dir.parent.mkdir(exist_ok=True)
    cache_dir.write_text("a file where the directory should be")
    engine = cached_engine(cache_fault_pause=0.2)
    assert engine.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK
    cache_dir.unlink()
    time.sleep(0.3)
    assert engine.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK  # stored this time
    assert engine.complete(MODEL, user="q", temperature=0).outcome is Outcome.CACHED
    events = [line["event"] for line in read_log(log_path) if line["event"].startswith("cache_")]
    assert events == ["cache_fault", "cache_recovered"]


def _run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=60
    )


def _child_env(server: FaultServer, cache_dir: Path, log_file: Path) -> dict[str, str]:
    return dict(
        os.environ,
        OPENAI_API_KEY=API_KEY,
        OPENAI_API_BASE=server.url,
        RESILIENT_LLM_CACHE_DIR=str(cache_dir),
        RESILIENT_LLM_LOG_FILE=str(log_file),
    )


CHILD_CALLS = """
    import resilient_llm
    model = "openai/gpt-4o-mini"
    outcomes = [resilient_llm.complete(model, user=f"shared {i}", temperature=0).outcome for i in range(10)]
    print(",".join(outcomes))
"""


@pytest.mark.slow
def test_two_processes_share_one_directory(server: FaultServer, tmp_path: Path) -> None:
    """Answers stored by one process are hits in another process on the same machine."""
    cache_dir = tmp_path / "shared-cache"
    first = _run_script(CHILD_CALLS, _child_env(server, cache_dir, tmp_path / "a.jsonl"))
    second = _run_script(CHILD_CALLS, _child_env(server, cache_dir, tmp_path / "b.jsonl"))
    assert first.stdout.strip() == ",".join(["ok"] * 10), first.stderr
    assert second.stdout.strip() == ",".join(["cached"] * 10), second.stderr
    assert server.stats()["requests"] == 10


def test_read_only_directory_never_fails_a_call(
    server: FaultServer, cached_engine: Callable[..., Engine], read_only_dir: Path, log_path: Path
) -> None:
    """A cache directory the process cannot write: every call answers, one warning per fault kind."""
    engine = cached_engine(cache_dir=str(read_only_dir), cache_fault_pause=0.01)
    outcomes = []
    for i in range(10):
        outcomes.append(engine.complete(MODEL, user=f"q{i}", temperature=0).outcome)
        time.sleep(0.02)  # past the pause: every call tries the store again
    assert outcomes == [Outcome.OK] * 10
    faults = [line for line in read_log(log_path) if line["event"] == "cache_fault"]
    assert len(faults) == 1
    assert engine.cache_counters["store_fault"] >= 5


def test_no_cache_value_is_a_pickle(server: FaultServer, cached_engine: Callable[..., Engine], cache_dir: Path) -> None:
    """Every stored value is raw JSON bytes (diskcache mode raw/binary), never pickle mode."""
    engine = cached_engine()
    for i in range(5):
        engine.complete(MODEL, user=f"q{i}", temperature=0)
    engine.complete(MODEL, user="big " * 20_000, temperature=0)  # large values go to files
    engine.close()
    with sqlite3.connect(cache_dir / "cache.db") as db:
        rows = db.execute("SELECT key, raw, mode, value, filename FROM Cache").fetchall()
    assert len(rows) == 6
    for key, raw_key, mode, value, filename in rows:
        assert raw_key == 1
        assert isinstance(key, str)
        assert key.startswith("v1:")
        assert mode in (1, 2)  # diskcache MODE_RAW, MODE_BINARY; MODE_PICKLE is 4
        data = bytes(value) if value is not None else (cache_dir / filename).read_bytes()
        assert data.startswith(b"{")
        assert not data.startswith(b"\x80")


def test_a_planted_pickle_is_never_loaded(
    server: FaultServer, cached_engine: Callable[..., Engine], cache_dir: Path
) -> None:
    """A pickled value written into the cache by someone else is refused, not unpickled; the call goes upstream."""
    import diskcache

    key = cache_key(variant(messages=({"role": "user", "content": "q"},), max_tokens=None), server.url)
    marker = cache_dir.parent / "pwned"
    with diskcache.Cache(str(cache_dir)) as planted:
        planted.set(key, _Exploit(str(marker)))
    result = cached_engine().complete(MODEL, user="q", temperature=0)
    assert result.outcome is Outcome.OK
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (open, (self.path, "w"))


def test_redis_store_shares_answers_between_engines(
    server: FaultServer, cached_engine: Callable[..., Engine], redis_server: RedisServer
) -> None:
    """Two engines (two machines) on one Redis: the second one's calls are hits."""
    first = cached_engine(cache_redis_url=redis_server.url)
    second = cached_engine(cache_redis_url=redis_server.url)
    assert first.complete(MODEL, user="q", temperature=0).outcome is Outcome.OK
    hit = second.complete(MODEL, user="q", temperature=0)
    assert (hit.outcome, hit.route) == (Outcome.CACHED, "cache:redis")
    assert server.stats()["requests"] == 1


def test_redis_killed_mid_run_never_fails_a_call_and_recovers(
    server: FaultServer, cached_engine: Callable[..., Engine], redis_server: RedisServer, log_path: Path
) -> None:
    """Redis dies: calls go upstream with one warning; Redis returns: the cache serves again."""
    engine = cached_engine(cache_redis_url=redis_server.url, cache_fault_pause=0.2)
    engine.complete(MODEL, user="before", temperature=0)
    redis_server.kill()
    outcomes = [engine.complete(MODEL, user=f"during {i}", temperature=0).outcome for i in range(5)]
    assert outcomes == [Outcome.OK] * 5
    redis_server.start()
    time.sleep(0.3)
    engine.complete(MODEL, user="after", temperature=0)
    assert engine.complete(MODEL, user="after", temperature=0).outcome is Outcome.CACHED
    events = [line["event"] for line in read_log(log_path) if line["event"].startswith("cache_")]
    assert events.count("cache_fault") == 1
    assert events[-1] == "cache_recovered"


def test_disk_store_runs_sqlite_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk store's async reads, writes and deletes run SQLite on a worker thread, never on the calling loop."""
    from resilient_llm.stores.disk import DiskStore

    store = DiskStore(str(tmp_path / "c"), 1 << 20)
    threads: list[threading.Thread] = []
    opened = store._open

    def watched() -> object:
        threads.append(threading.current_thread())
        return opened()

    monkeypatch.setattr(store, "_open", watched)

    async def scenario() -> tuple[bytes | None, threading.Thread]:
        await store.set("k", b"v", None)
        got = await store.get("k")
        await store.delete("k")
        await store.close()
        return got, threading.current_thread()

    got, loop_thread = asyncio.run(scenario())
    assert got == b"v"
    assert len(threads) == 3
    assert loop_thread not in threads
