"""resilient-llm's rubric judge with the trainer's signature (the code lives in resilient_llm.dropin.rubric_utils).

Not installed into a trainer checkout (its own rubric_utils.py is never replaced); use it from here, or import
``resilient_llm.dropin.rubric_utils`` in new code.
"""

from resilient_llm.dropin.rubric_utils import *  # noqa: F403
from resilient_llm.dropin.rubric_utils import __all__  # noqa: F401
