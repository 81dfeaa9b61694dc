"""``python -m resilient_llm.cli``: the same as the ``resilient-llm`` command."""

import sys

from resilient_llm.cli import main

sys.exit(main())
