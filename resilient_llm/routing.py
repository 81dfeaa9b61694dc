"""OpenRouter's routing preferences the user pins for a run: the ``provider`` object and ``reasoning`` of each call.

OpenRouter picks, per call, which upstream provider serves a model (and so which quantisation, which context limit,
which inference stack answers); a reasoning model spends tokens on reasoning as its ``reasoning`` settings say. A
judge whose provider changes mid-run is a different judge, so these are pinned once per run, from the environment
(``RESILIENT_LLM_PROVIDER_*``, ``RESILIENT_LLM_REASONING_*``), validated at start-up like every other variable.

Which calls they apply to: every call this engine sends to OpenRouter. The engine does not know which calls are
judges (in DR Tulu every call through it is a judge or rubric call), so a per-model rule would be a guess; a call
that sets ``provider`` or ``reasoning`` in its own ``extra_body`` keeps its own object whole (it is not merged field
by field: half of each could route somewhere neither meant). They go into the request's body, so they are part of
its cache key (another provider or effort is another judge) and of what a hedge or retry sends. They are not sent
to an endpoint that is not OpenRouter (a vLLM server or OpenAI would refuse fields it does not know), nor to a
LiteLLM fallback that is not OpenRouter (``without_openrouter_fields``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resilient_llm.errors import ConfigError
from resilient_llm.validation import BOOL, Check, Validated, choice, int_in, setting

# The request fields that only OpenRouter reads.
OPENROUTER_FIELDS = ("provider", "reasoning")
SORTS = ("price", "throughput", "latency")
DATA_COLLECTION = ("allow", "deny")
QUANTIZATIONS = ("int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown")
EFFORTS = ("xhigh", "high", "medium", "low", "minimal", "none")
REASONING_MAX_TOKENS = 1_000_000

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def _words(raw: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in raw.split(","))


def _distinct(values: object) -> bool:
    return isinstance(values, tuple) and bool(values) and len(set(values)) == len(values)


SLUGS: Check[tuple[str, ...]] = Check(
    "a comma-separated list of provider slugs as OpenRouter names them (e.g. 'openai,azure' or 'deepinfra/turbo'), "
    "each once",
    _words,
    lambda v: _distinct(v) and all(isinstance(s, str) and _SLUG.fullmatch(s) for s in v),
)
QUANTIZATION_LIST: Check[tuple[str, ...]] = Check(
    f"a comma-separated list of {', '.join(QUANTIZATIONS)}, each once",
    lambda raw: tuple(word.lower() for word in _words(raw)),
    lambda v: _distinct(v) and all(q in QUANTIZATIONS for q in v),
)


@dataclass(frozen=True)
class RoutingConfig(Validated):
    """OpenRouter's ``provider`` and ``reasoning`` preferences for every call; unset fields are not sent."""

    provider_order: tuple[str, ...] | None = setting(None, SLUGS, optional=True)
    provider_allow_fallbacks: bool | None = setting(None, BOOL, optional=True)
    provider_require_parameters: bool | None = setting(None, BOOL, optional=True)
    provider_data_collection: str | None = setting(None, choice(DATA_COLLECTION, joiner=" or "), optional=True)
    provider_sort: str | None = setting(None, choice(SORTS), optional=True)
    provider_quantizations: tuple[str, ...] | None = setting(None, QUANTIZATION_LIST, optional=True)
    provider_only: tuple[str, ...] | None = setting(None, SLUGS, optional=True)
    provider_ignore: tuple[str, ...] | None = setting(None, SLUGS, optional=True)
    reasoning_effort: str | None = setting(None, choice(EFFORTS), optional=True)
    reasoning_max_tokens: int | None = setting(None, int_in(1, REASONING_MAX_TOKENS), optional=True)
    reasoning_exclude: bool | None = setting(None, BOOL, optional=True)

    def __post_init__(self) -> None:
        for name in ("provider_order", "provider_quantizations", "provider_only", "provider_ignore"):
            value = getattr(self, name)
            if isinstance(value, list):  # a list given in code: kept as the tuple the checks expect
                object.__setattr__(self, name, tuple(value))
        super().__post_init__()
        if self.reasoning_effort is not None and self.reasoning_max_tokens is not None:
            raise ConfigError(
                f"reasoning effort {self.reasoning_effort!r} and reasoning max_tokens {self.reasoning_max_tokens} "
                "are both set: OpenRouter takes one of the two, so set either, not both",
                field="reasoning_max_tokens",
            )
        both = sorted(set(self.provider_only or ()) & set(self.provider_ignore or ()))
        if both:
            raise ConfigError(
                f"provider {', '.join(both)} is both allowed (only) and skipped (ignore): name each provider in at "
                "most one of the two",
                field="provider_ignore",
            )

    def provider(self) -> dict[str, Any]:
        """The ``provider`` object to send (empty when nothing is pinned)."""
        fields = {
            "order": self.provider_order,
            "allow_fallbacks": self.provider_allow_fallbacks,
            "require_parameters": self.provider_require_parameters,
            "data_collection": self.provider_data_collection,
            "sort": self.provider_sort,
            "quantizations": self.provider_quantizations,
            "only": self.provider_only,
            "ignore": self.provider_ignore,
        }
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items() if v is not None}

    def reasoning(self) -> dict[str, Any]:
        """The ``reasoning`` object to send (empty when nothing is set)."""
        fields = {
            "effort": self.reasoning_effort,
            "max_tokens": self.reasoning_max_tokens,
            "exclude": self.reasoning_exclude,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def body_fields(self) -> dict[str, Any]:
        """The top-level fields these preferences add to an OpenRouter request body."""
        fields = {"provider": self.provider(), "reasoning": self.reasoning()}
        return {name: value for name, value in fields.items() if value}

    def apply(self, extra_body: Mapping[str, Any], *, openrouter: bool) -> dict[str, Any]:
        """A call's extra body with the pinned objects added where the call set none (only for OpenRouter)."""
        merged = dict(extra_body)
        if openrouter:
            for name, value in self.body_fields().items():
                merged.setdefault(name, value)
        return merged


def without_openrouter_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A request body without the fields only OpenRouter reads, for an endpoint that would refuse them."""
    return {name: value for name, value in body.items() if name not in OPENROUTER_FIELDS}
