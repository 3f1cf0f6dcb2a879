"""Reading teacher answers, whatever the type: models often wrap what they write in a Markdown fence."""

from __future__ import annotations


def strip_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence; the content is what counts."""
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()
