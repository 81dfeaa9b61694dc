"""The fault server's vocabulary: every fault kind it can produce, the named profiles that mix them, its counters."""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Mapping

from resilient_llm.testing.catalogue import CATALOGUE_KINDS

# Every kind the server can produce; "ok" is a clean answer.
FAULT_KINDS = (
    "ok",
    "reset",  # TCP RST after reading the request
    "drop",  # connection closed without a response
    "protocol_error",  # garbage instead of an HTTP status line
    "truncated_body",  # Content-Length promised, half sent, connection closed
    "hang",  # no answer for ``hang_s`` seconds
    "http_429",  # rate limited, with Retry-After
    "http_408",
    "http_500",  # HTML error page
    "http_502",  # HTML error page
    "http_503",  # HTML error page
    "http_400",
    "http_401",
    "http_402",  # out of credits: final
    "budget_402",  # in-flight budget exhausted, with Retry-After: temporary
    "http_403",
    "http_404",
    "http_422",
    "echo_auth",  # 401 whose message echoes the Authorization header (a careless gateway)
    "error_in_200",  # {"error": {...}} with status 200
    "bad_json",  # 200 with an HTML body
    "truncated_json",  # 200 with half a JSON document
    "empty_choices",
    "null_content",
    "finish_error",  # finish_reason "error"
    *CATALOGUE_KINDS,  # OpenRouter's per-model failures (testing/catalogue.py)
)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Fault weights (the rest of the probability is "ok"), and an optional outage window after the first request."""

    faults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    outage: tuple[float, float] | None = None  # (starts after s, lasts s): every request gets a 503
    capacity: int | None = None  # requests admitted at once; the rest get an immediate 429 with Retry-After
    latency: tuple[float, float] | None = None  # each answer's latency drawn from [low, high] s, unless latency_s
    rate: tuple[float, int] | None = None  # a token bucket (requests per s, burst); beyond: a 429
    late_refusals: bool = False  # the token bucket's 429 comes after the answer latency instead of at once

    def draw(self, seed: str) -> str:
        """The fault kind for one request, from its seed."""
        point = random.Random(seed).random()
        for kind, weight in self.faults.items():
            point -= weight
            if point < 0:
                return kind
        return "ok"

    def in_outage(self, since_first: float) -> bool:
        return self.outage is not None and self.outage[0] <= since_first < self.outage[0] + self.outage[1]


PROFILES: dict[str, Profile] = {
    "clean": Profile(),
    "flaky": Profile(
        {
            "reset": 0.035,
            "drop": 0.035,
            "http_429": 0.04,
            "http_500": 0.03,
            "http_502": 0.03,
            "http_503": 0.03,
            "error_in_200": 0.025,
            "truncated_json": 0.02,
            "empty_choices": 0.015,
            "null_content": 0.015,
            "protocol_error": 0.01,
            "truncated_body": 0.01,
            "hang": 0.01,
        }
    ),
    "ratelimit": Profile({"http_429": 0.6}),
    "outage": Profile(outage=(1.0, 4.0)),
    "hangs": Profile({"hang": 0.03}),  # otherwise clean: for hedging
    "clean-500ms": Profile(latency=(0.4, 0.6)),  # a short judge call's latency
    "capacity": Profile(capacity=100, latency=(0.4, 0.6)),  # at most 100 in flight, 429 beyond
    "throttle": Profile(rate=(50.0, 50), latency=(0.04, 0.06)),  # 50 requests/s, bursts of 50, 429 beyond
    # the same bucket behind a proxy: its 429 takes as long as an answer, so many requests are out before one returns
    "throttle-late": Profile(rate=(50.0, 50), latency=(0.04, 0.06), late_refusals=True),
}

KNOWN_MODELS = ("openai/gpt-4o-mini", "openai/gpt-4.1-mini", "anthropic/claude-3.5-haiku")


@dataclasses.dataclass
class Counters:
    """What the server saw; ``FaultServer.stats()`` reports them."""

    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    admitted: int = 0  # capacity profile: requests holding a slot
    peak_admitted: int = 0
    capacity_refusals: int = 0
    rate_refusals: int = 0  # throttle profile: requests refused for want of a token
    requests_while_down: int = 0  # requests that met a manual outage (``down``)
    retry_after_violations: int = 0
    per_model: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # requests
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def check_capacity(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"capacity={value!r}: expected an integer >= 1")
    return value


@dataclasses.dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a request takes one or is refused."""

    rate: float
    burst: int
    tokens: float = -1.0  # full at the first request
    refilled: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.refilled = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
