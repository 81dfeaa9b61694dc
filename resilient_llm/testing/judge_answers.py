"""The fault server's answers to DR Tulu's citation judge: a rating in the format the prompt asks for.

DR Tulu scores citations with three prompts, each parsed by a regular expression over a ``[[...]]`` rating:

- is this sentence a claim that needs a citation? ``Need Citation: [[Yes]]`` or ``[[No]]``
- does the cited snippet support the claim? ``Rating: [[Fully supported]]``, ``[[Partially supported]]``,
  ``[[No support]]``
- is the cited snippet relevant to the claim? ``Rating: [[Relevant]]`` or ``[[Unrelevant]]``

A prompt is recognised by the answer format it spells out (the first marker below that it contains), and the
rating is drawn from the request's hash: the same request always gets the same rating, so a reward computed from
these answers is deterministic, and a reward that changes under faults changed because a call failed. Any other
prompt gets ``None``, and the server answers ``{"score": 0..2}`` (the rubric judge's format) as before.
"""

from __future__ import annotations

RATINGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Need Citation: [[Yes/No]]", "Need Citation: [[{}]] Analysis: drawn by the local fault server.", ("Yes", "No")),
    (
        "[[Fully supported]]",
        "Rating: [[{}]] Analysis: drawn by the local fault server.",
        ("Fully supported", "Partially supported", "No support"),
    ),
    ("[[Relevant]]", "Rating: [[{}]] Analysis: drawn by the local fault server.", ("Relevant", "Unrelevant")),
)


def citation_rating(prompt: str, digest: str) -> str | None:
    """The rating for a citation-judge prompt (``digest``: the request's hex hash), or None for any other prompt."""
    for marker, template, choices in RATINGS:
        if marker in prompt:
            return template.format(choices[int(digest[8:16], 16) % len(choices)])
    return None
