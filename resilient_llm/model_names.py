"""Model names as OpenRouter routes them: ``provider/model``. Pure functions, no I/O.

DR Tulu's own defaults are bare OpenAI names (``CITATION_JUDGE_MODEL=gpt-4o-mini``, ``run_llm_judge`` and the HLE judge
``gpt-4.1``, LiteLLM fallbacks ``gpt-4.1-mini``), which LiteLLM sends to OpenAI. OpenRouter serves the same models as
``openai/<name>``, so a bare OpenAI name is mapped there (the engine logs each mapping once); any other bare name is
refused with the likely fix, since guessing a provider could send the call to the wrong model.

LiteLLM spells the provider of a model as a prefix of its own (``hosted_vllm/``, ``azure/``, ``gemini/``, ...), and
DR Tulu's own tests use ``hosted_vllm/<model>`` against a vLLM base URL. What such a name means depends on where the
call goes: to a vLLM (or any OpenAI-compatible) server, ``hosted_vllm/`` is dropped, as LiteLLM does (the server
knows its model by the rest); to OpenRouter, a prefix with a sure counterpart is translated (``azure/gpt-4o`` to
``openai/gpt-4o``, ``gemini/...`` to ``google/...``) and any other LiteLLM-only prefix is refused, naming the fix.
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


# LiteLLM provider prefixes OpenRouter does not know; each means "that provider's own API", not OpenRouter's.
LITELLM_ONLY_PREFIXES = (
    "hosted_vllm",
    "vllm",
    "ollama",
    "ollama_chat",
    "huggingface",
    "bedrock",
    "sagemaker",
    "vertex_ai",
    "together_ai",
    "fireworks_ai",
    "groq",
    "deepinfra",
    "custom_openai",
    "text-completion-openai",
    "litellm_proxy",
    "azure_ai",
)
# Prefixed on a server that is not OpenRouter: LiteLLM sends the rest of the name (the server's own model name).
SELF_HOSTED_PREFIXES = ("hosted_vllm/",)


def endpoint_name(model: str, source: str = "model", *, openrouter: bool) -> str:
    """The name to send to the configured endpoint (OpenRouter or another OpenAI-compatible server)."""
    if openrouter:
        return openrouter_name(model, source)
    name = model_name(model, source)
    for prefix in SELF_HOSTED_PREFIXES:
        if name.startswith(prefix):
            return model_name(name[len(prefix) :].strip("/"), source)
    return name


def openrouter_name(model: str, source: str = "model") -> str:
    """The name to send to OpenRouter: LiteLLM's ``openrouter/`` spelling dropped, bare OpenAI names mapped, LiteLLM's
    ``azure/`` and ``gemini/`` translated, other LiteLLM-only prefixes refused."""
    name = model_name(model, source).removeprefix("openrouter/")
    prefix, _, rest = name.partition("/")
    if prefix == "azure" and is_bare_openai(rest):
        return f"openai/{rest}"
    if prefix == "gemini" and rest.lower().startswith(("gemini", "gemma")) and "/" not in rest:
        return f"google/{rest}"
    if prefix in LITELLM_ONLY_PREFIXES or prefix in ("azure", "gemini"):
        guess = rest.lower() if "/" in rest else suggest_model(rest)
        raise ConfigError(
            f"{source}={model!r} uses LiteLLM's {prefix + '/'!r} prefix, which OpenRouter does not know: to call "
            f"that provider or your own server, point OPENAI_API_BASE at it (e.g. http://localhost:8000/v1 for "
            f"vLLM); to call the model through OpenRouter, use OpenRouter's name for it (perhaps {guess!r})",
            field=source,
        )
    if is_bare_openai(name):
        return f"openai/{name}"
    if "/" not in name:
        raise ConfigError(
            f"{source}={model!r} has no provider prefix, which OpenRouter needs: use {suggest_model(name)!r}"
        )
    return name
