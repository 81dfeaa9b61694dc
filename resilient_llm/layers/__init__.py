"""One Handler per module; ``resilient_llm.stack`` puts them in order."""
