"""The curated public API."""

from __future__ import annotations

import types

import resilient_llm


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ is sorted, complete (every public non-module attribute) and every name in it exists."""
    public = {
        name
        for name in dir(resilient_llm)
        if not name.startswith("_") and not isinstance(getattr(resilient_llm, name), types.ModuleType)
    }
    assert sorted(resilient_llm.__all__) == resilient_llm.__all__
    assert set(resilient_llm.__all__) == public
