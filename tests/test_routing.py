"""Pinned OpenRouter routing: the provider and reasoning objects from the environment, where they go and where not."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import Config, ConfigError, Engine
from resilient_llm.policy.cache import cache_key
from resilient_llm.routing import RoutingConfig, without_openrouter_fields
from resilient_llm.testing.wire import answer_body
from tests.conftest import fast_config

KEY = {"OPENAI_API_KEY": "sk-or-v1-secret"}
OPENROUTER = "https://openrouter.ai/api/v1"
PINNED = {
    "RESILIENT_LLM_PROVIDER_ORDER": "openai, azure",
    "RESILIENT_LLM_PROVIDER_ALLOW_FALLBACKS": "false",
    "RESILIENT_LLM_PROVIDER_REQUIRE_PARAMETERS": "true",
    "RESILIENT_LLM_PROVIDER_DATA_COLLECTION": "deny",
    "RESILIENT_LLM_PROVIDER_SORT": "Throughput",
    "RESILIENT_LLM_PROVIDER_QUANTIZATIONS": "fp16,bf16",
    "RESILIENT_LLM_PROVIDER_ONLY": "openai,azure,deepinfra/turbo",
    "RESILIENT_LLM_PROVIDER_IGNORE": "together",
    "RESILIENT_LLM_REASONING_EFFORT": "low",
    "RESILIENT_LLM_REASONING_EXCLUDE": "true",
}


def test_every_variable_lands_in_the_objects_openrouter_reads() -> None:
    """Each variable sets its field of ``provider`` or ``reasoning``, spelled as OpenRouter's docs spell them."""
    config = Config.from_env(KEY | PINNED)
    assert config.routing.body_fields() == {
        "provider": {
            "order": ["openai", "azure"],
            "allow_fallbacks": False,
            "require_parameters": True,
            "data_collection": "deny",
            "sort": "throughput",
            "quantizations": ["fp16", "bf16"],
            "only": ["openai", "azure", "deepinfra/turbo"],
            "ignore": ["together"],
        },
        "reasoning": {"effort": "low", "exclude": True},
    }
    budget = Config.from_env(KEY | {"RESILIENT_LLM_REASONING_MAX_TOKENS": "400"})
    assert budget.routing.body_fields() == {"reasoning": {"max_tokens": 400}}
    assert Config.from_env(KEY).routing.body_fields() == {}  # nothing pinned: nothing sent


@pytest.mark.parametrize(
    ("env", "named", "accepted"),
    [
        ({"RESILIENT_LLM_PROVIDER_SORT": "cheapest"}, "RESILIENT_LLM_PROVIDER_SORT", "price, throughput, latency"),
        ({"RESILIENT_LLM_PROVIDER_ORDER": "openai,,azure"}, "RESILIENT_LLM_PROVIDER_ORDER", "provider slugs"),
        ({"RESILIENT_LLM_PROVIDER_ONLY": "openai,openai"}, "RESILIENT_LLM_PROVIDER_ONLY", "each once"),
        ({"RESILIENT_LLM_PROVIDER_IGNORE": "open ai"}, "RESILIENT_LLM_PROVIDER_IGNORE", "provider slugs"),
        ({"RESILIENT_LLM_PROVIDER_QUANTIZATIONS": "fp8,int3"}, "RESILIENT_LLM_PROVIDER_QUANTIZATIONS", "int4, int8"),
        ({"RESILIENT_LLM_PROVIDER_DATA_COLLECTION": "never"}, "PROVIDER_DATA_COLLECTION", "allow or deny"),
        ({"RESILIENT_LLM_PROVIDER_ALLOW_FALLBACKS": "maybe"}, "PROVIDER_ALLOW_FALLBACKS", "true or false"),
        ({"RESILIENT_LLM_PROVIDER_REQUIRE_PARAMETERS": "2"}, "RESILIENT_LLM_PROVIDER_REQUIRE_PARAMETERS", "true or"),
        ({"RESILIENT_LLM_REASONING_EFFORT": "max"}, "RESILIENT_LLM_REASONING_EFFORT", "xhigh, high, medium, low"),
        ({"RESILIENT_LLM_REASONING_MAX_TOKENS": "0"}, "RESILIENT_LLM_REASONING_MAX_TOKENS", "an integer 1..1000000"),
        ({"RESILIENT_LLM_REASONING_EXCLUDE": "hide"}, "RESILIENT_LLM_REASONING_EXCLUDE", "true or false"),
        (
            {"RESILIENT_LLM_REASONING_EFFORT": "high", "RESILIENT_LLM_REASONING_MAX_TOKENS": "800"},
            "RESILIENT_LLM_REASONING_MAX_TOKENS",
            "either, not both",
        ),
        (
            {"RESILIENT_LLM_PROVIDER_ONLY": "openai,azure", "RESILIENT_LLM_PROVIDER_IGNORE": "azure"},
            "RESILIENT_LLM_PROVIDER_IGNORE",
            "at most one of the two",
        ),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(env: dict[str, str], named: str, accepted: str) -> None:
    """A bad routing value is a ConfigError with the variable and what it accepts, as for every other variable."""
    with pytest.raises(ConfigError) as info:
        Config.from_env(KEY | env)
    assert named in str(info.value)
    assert accepted in str(info.value)


def test_a_section_built_in_code_checks_itself() -> None:
    """RoutingConfig in code: lists are accepted, bad values refused naming the field."""
    assert RoutingConfig(provider_order=["openai"]).provider() == {"order": ["openai"]}  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="provider_sort"):
        RoutingConfig(provider_sort="fastest")


def test_the_calls_own_objects_win_whole() -> None:
    """A call that sets provider (or reasoning) keeps its own object, not a field-by-field mix with the pinned one."""
    config = Config.from_env(KEY | PINNED)
    own = {"provider": {"order": ["anthropic"]}, "seed": 7}
    sent = config.extra_body(own)
    assert sent["provider"] == {"order": ["anthropic"]}
    assert sent["reasoning"] == {"effort": "low", "exclude": True}
    assert sent["seed"] == 7
    assert own == {"provider": {"order": ["anthropic"]}, "seed": 7}  # the caller's mapping is not changed


def test_only_openrouter_gets_them() -> None:
    """Another endpoint (a vLLM server) gets none of them; a LiteLLM body for another provider loses them too."""
    local = Config.from_env(KEY | PINNED | {"OPENAI_API_BASE": "http://127.0.0.1:8000/v1"})
    assert local.extra_body({"seed": 1}) == {"seed": 1}
    body = {"model": "m", "provider": {"order": ["x"]}, "reasoning": {"effort": "low"}, "seed": 1}
    assert without_openrouter_fields(body) == {"model": "m", "seed": 1}


def _key(engine: Engine, **options: Any) -> str:
    return cache_key(engine.request("openai/gpt-4o-mini", user="judge this", temperature=0, **options), OPENROUTER)


def test_pins_are_part_of_the_cache_key(tmp_path: Path) -> None:
    """Another provider or reasoning effort is another judge: its answers are cached apart; no pins, the old key."""
    engines: list[Engine] = [
        Engine(fast_config(OPENROUTER, "off", **routing_options))
        for routing_options in ({}, {"provider_order": ("openai",)}, {"provider_order": ("azure",)})
    ]
    pinned_effort = Engine(fast_config(OPENROUTER, "off", reasoning_effort="high"))
    try:
        plain, openai, azure = (_key(e) for e in engines)
        assert len({plain, openai, azure, _key(pinned_effort)}) == 4
        assert plain == _key(engines[0], extra_body={})  # unset pins leave every existing key as it was
        assert _key(engines[1]) == openai  # the same pins, the same key
        own = {"provider": {"order": ["azure"]}}
        assert _key(engines[1], extra_body=own) == _key(engines[2])  # what is sent is what is keyed
    finally:
        for engine in [*engines, pinned_effort]:
            engine.close()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST like OpenRouter and keeps the body it was sent (also as an HTTP proxy: absolute URLs)."""

    bodies: list[dict[str, Any]]
    paths: list[str]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.bodies.append(json.loads(raw))  # type: ignore[attr-defined]
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        answer = json.dumps({**answer_body(raw), "provider": "OpenAI"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.bodies = []  # type: ignore[attr-defined]
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_wire_carries_them_to_openrouter_only(
    recorder: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through a real HTTP exchange: a base URL on openrouter.ai sends the pinned objects, a local one does not."""
    port = recorder.server_address[1]
    local = f"http://127.0.0.1:{port}/api/v1"
    # http://openrouter.ai reached through the recorder as an HTTP proxy: the request never leaves this machine.
    monkeypatch.setenv("HTTP_PROXY", local.rsplit("/api", 1)[0])
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    pins: dict[str, Any] = {"provider_order": ("openai",), "provider_allow_fallbacks": False, "reasoning_exclude": True}
    make: Callable[[str], Engine] = lambda base: Engine(fast_config(base, "off", **pins))  # noqa: E731
    with make("http://openrouter.ai/api/v1") as engine:
        assert engine.complete("openai/gpt-4o-mini", user="rate this").outcome == "ok"
    with make(local) as engine:
        engine.complete("openai/gpt-4o-mini", user="rate this")
    to_openrouter, to_local = recorder.bodies  # type: ignore[attr-defined]
    assert recorder.paths[0] == "http://openrouter.ai/api/v1/chat/completions"  # type: ignore[attr-defined]
    assert to_openrouter["provider"] == {"order": ["openai"], "allow_fallbacks": False}
    assert to_openrouter["reasoning"] == {"exclude": True}
    assert not {"provider", "reasoning"} & set(to_local)


@pytest.mark.parametrize(("model", "kept"), [("openai/gpt-4o-mini", False), ("openrouter/openai/gpt-4o-mini", True)])
def test_a_litellm_fallback_gets_them_only_when_it_is_openrouter(
    model: str, kept: bool, recorder: http.server.ThreadingHTTPServer
) -> None:
    """The LiteLLM route over the wire: another provider's body has no provider/reasoning; OpenRouter's keeps them."""
    import asyncio

    from resilient_llm.endpoints.litellm import LiteLLMHandler, LiteLLMRouteConfig

    local = f"http://127.0.0.1:{recorder.server_address[1]}/v1"
    handler = LiteLLMHandler(LiteLLMRouteConfig(model=model, base_url=local, api_key="sk-fallback", retries=0))
    pins = {"provider": {"order": ["openai"]}, "reasoning": {"effort": "low"}}
    with Engine(fast_config(OPENROUTER, "off")) as engine:  # a request as the engine builds it
        request = engine.request("openai/gpt-4o-mini", user="rate this", extra_body=pins, timeout=10)
    asyncio.run(handler.handle(request))
    (body,) = recorder.bodies  # type: ignore[attr-defined]
    assert ("provider" in body, "reasoning" in body) == (kept, kept)
