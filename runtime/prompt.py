"""The student's prompt: the same text at training time and at serving time.

The compiler renders the model's chat template once around a placeholder and stores the text
before and after it; serving needs no template engine and cannot drift from training.
"""

from __future__ import annotations

PLACEHOLDER = "\u241eINPUT\u241e"


def render(prefix: str, suffix: str, text: str) -> str:
    return f"{prefix}{text}{suffix}"
