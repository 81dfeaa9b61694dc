"""One engine per process, built on first use: ``complete()`` and ``acomplete()`` from any thread or event loop,
``configure()`` to give it a Config instead of the environment, ``metrics()`` for the trainer's logger. After
``fork()`` the child builds its own engine (the parent's loop thread did not survive); at interpreter exit the engine
closes and no new one is built.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence
from typing import Unpack

from resilient_llm.config import Config
from resilient_llm.engine import Engine, mark_exiting, refuse_at_exit
from resilient_llm.types import ChatOptions, ChatResult, Message

_default: Engine | None = None
_default_lock = threading.Lock()
_configured: Config | None = None


def configure(config: Config | None) -> None:
    """Use ``config`` for the process-wide engine from the next call on (None: the environment again).

    The current process-wide engine, if any, is closed first, so no call runs under two configurations.
    """
    global _configured
    shutdown()
    _configured = config


def default_engine() -> Engine:
    """The process-wide engine, created on first use from ``configure``'s config or the environment (after a fork,
    anew in the child)."""
    global _default
    engine = _default
    if engine is not None:
        return engine
    refuse_at_exit()
    with _default_lock:
        if _default is None:
            _default = Engine(_configured or Config.from_env())
        return _default


def shutdown() -> None:
    """Close the process-wide engine; the next call builds a new one (from the environment as it is then, unless
    ``configure`` gave a config)."""
    global _default
    with _default_lock:
        engine, _default = _default, None
    if engine is not None:
        engine.close()


def _forget_in_child() -> None:
    # The loop thread did not survive the fork; drop the parent's engine without touching its sockets.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


def metrics() -> dict[str, float]:
    """What the process-wide engine did since the previous call, as ``llm/...`` numbers ready for
    ``wandb.log(resilient_llm.metrics(), step=step)``; empty while no engine runs (e.g. USE_OPENROUTER_DIRECT=false)."""
    engine = _default
    return {} if engine is None else engine.metrics()


def complete(model: str, messages: Sequence[Message] | None = None, **options: Unpack[ChatOptions]) -> ChatResult:
    """Blocking chat completion through the process-wide engine."""
    return default_engine().complete(model, messages, **options)


async def acomplete(
    model: str, messages: Sequence[Message] | None = None, **options: Unpack[ChatOptions]
) -> ChatResult:
    """Awaitable chat completion through the process-wide engine, from any event loop."""
    return await default_engine().acomplete(model, messages, **options)


def _at_exit() -> None:
    mark_exiting()
    shutdown()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(_at_exit)
