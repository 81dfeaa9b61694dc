"""resilient-llm drop-in: the code lives in resilient_llm.dropin.run_utils (pip install resilient-llm).

Put here by `resilient-llm install`; `resilient-llm install --revert PATH` restores the original.
"""

from resilient_llm.dropin.run_utils import *  # noqa: F403
from resilient_llm.dropin.run_utils import __all__  # noqa: F401
