"""The trainer integration's own knobs: the switch, the judge and generation models, the neutral score and text.

They are not the engine's business (the engine does not know what a judge is), so they live here, read from the
environment through the same table machinery as the engine's ``Config``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from resilient_llm.config import PREFIX, Config, Variable, read_section
from resilient_llm.errors import ConfigError
from resilient_llm.validation import BOOL, FRACTION, TEXT, Validated, setting

SWITCH = "USE_OPENROUTER_DIRECT"


@dataclass(frozen=True)
class TrainerConfig(Validated):
    """How the drop-in treats the trainer's calls on the direct path."""

    judge_model: str | None = setting(None, TEXT, optional=True)
    generation_model: str | None = setting(None, TEXT, optional=True)
    neutral_score: float = setting(0.5, FRACTION)  # our judge's score when the judge could not answer
    judge_neutral_text: str | None = setting(None, TEXT, optional=True)  # the text a neutral judge call returns

    @classmethod
    def from_env(cls, engine: Config, environ: Mapping[str, str] | None = None) -> TrainerConfig:
        """Read and check the trainer's variables; model names are checked as the engine will send them."""
        env = os.environ if environ is None else environ
        config: TrainerConfig = read_section(env, "trainer", cls, TRAINER_ENVIRONMENT)
        if config.judge_neutral_text is not None:
            if not config.judge_model:
                raise ConfigError(
                    f"{PREFIX}JUDGE_NEUTRAL_TEXT is set but RUBRIC_JUDGE_MODEL is not: it applies to judge calls, "
                    "which are told apart by that model name"
                )
            if config.judge_model == config.generation_model:
                raise ConfigError(
                    f"{PREFIX}JUDGE_NEUTRAL_TEXT needs RUBRIC_JUDGE_MODEL and RUBRIC_GENERATION_MODEL to differ "
                    f"(both are {config.judge_model!r}): judge calls are told apart by their model name"
                )
        for variable, model in (
            ("RUBRIC_JUDGE_MODEL", config.judge_model),
            ("RUBRIC_GENERATION_MODEL", config.generation_model),
            *((name, env.get(name) or None) for name in DR_TULU_MODEL_VARIABLES),
        ):
            if model is not None:
                engine.model_name(model, variable)
        return config


# Read by DR Tulu itself, not by us; checked with the rest so a bad one stops the run at its first call, not later.
DR_TULU_MODEL_VARIABLES = ("CITATION_JUDGE_MODEL", "HLE_JUDGE_MODEL")

TRAINER_ENVIRONMENT: tuple[Variable, ...] = (
    Variable("RUBRIC_JUDGE_MODEL", "trainer", "judge_model"),
    Variable("RUBRIC_GENERATION_MODEL", "trainer", "generation_model"),
    Variable(PREFIX + "NEUTRAL_SCORE", "trainer", "neutral_score"),
    Variable(PREFIX + "JUDGE_NEUTRAL_TEXT", "trainer", "judge_neutral_text"),
)


def use_openrouter_direct(environ: Mapping[str, str] | None = None) -> bool:
    """Read ``USE_OPENROUTER_DIRECT`` now (true/false, default false); a bad value raises ConfigError naming it."""
    raw = (os.environ if environ is None else environ).get(SWITCH)
    if raw is None or not raw.strip():
        return False
    try:
        return BOOL.from_text(raw)
    except ValueError:
        raise ConfigError(f"{SWITCH}={raw!r} is not valid: expected {BOOL.accepted}", field=SWITCH) from None


_lock = threading.Lock()
_current: tuple[Config, TrainerConfig] | None = None


def trainer_config(engine: Config) -> TrainerConfig:
    """The trainer config that goes with this engine config: read once per engine configuration."""
    global _current
    with _lock:
        if _current is None or _current[0] is not engine:
            _current = (engine, TrainerConfig.from_env(engine))
        return _current[1]
