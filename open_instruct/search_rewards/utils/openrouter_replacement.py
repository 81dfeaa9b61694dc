"""resilient-llm drop-in: the code lives in resilient_llm.dropin.openrouter_replacement (pip install resilient-llm).

Put here by `resilient-llm install`; `resilient-llm install --revert PATH` restores the original.
"""

from resilient_llm.dropin.openrouter_replacement import *  # noqa: F403
from resilient_llm.dropin.openrouter_replacement import __all__  # noqa: F401
