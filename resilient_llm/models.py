"""Model names as OpenRouter routes them: ``provider/model``. Pure functions, no I/O.

DR Tulu's own defaults are bare OpenAI names (``CITATION_JUDGE_MODEL=gpt-4o-mini``, ``run_llm_judge`` and the HLE judge
``gpt-4.1``, LiteLLM fallbacks ``gpt-4.1-mini``), which LiteLLM sends to OpenAI. OpenRouter serves the same models as
``openai/<name>``, so a bare OpenAI name is mapped there (the engine logs each mapping once); any other bare name is
refused with the likely fix, since guessing a provider could send the call to the wrong model.
"""

from __future__ import annotations

from resilient_llm.errors import ConfigError

OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
_PROVIDERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (OPENAI_PREFIXES, "openai"),
    (("claude",), "anthropic"),
    (("gemini", "gemma"), "google"),
    (("llama",), "meta-llama"),
    (("mistral", "mixtral"), "mistralai"),
    (("qwen", "qwq"), "qwen"),
    (("deepseek",), "deepseek"),
)


def suggest_model(name: str) -> str:
    """Best guess of the OpenRouter name of a bare model name."""
    lowered = name.lower()
    for prefixes, provider in _PROVIDERS:
        if lowered.startswith(prefixes):
            return f"{provider}/{name}"
    return f"<provider>/{name}"


def is_bare_openai(name: str) -> bool:
    """A bare OpenAI model name (``gpt-4.1``, ``o3-mini``), which OpenRouter serves as ``openai/<name>``."""
    return "/" not in name and name.lower().startswith(OPENAI_PREFIXES)


def model_name(model: str, source: str = "model") -> str:
    """The model name stripped; ConfigError naming ``source`` when there is none."""
    name = model.strip() if isinstance(model, str) else ""
    if not name:
        raise ConfigError(f"{source}={model!r} is empty: give a model name such as 'openai/gpt-4o-mini'")
    return name


def openrouter_name(model: str, source: str = "model") -> str:
    """The name to send to OpenRouter: LiteLLM's ``openrouter/`` spelling dropped, bare OpenAI names mapped."""
    name = model_name(model, source).removeprefix("openrouter/")
    if is_bare_openai(name):
        return f"openai/{name}"
    if "/" not in name:
        raise ConfigError(
            f"{source}={model!r} has no provider prefix, which OpenRouter needs: use {suggest_model(name)!r}"
        )
    return name
