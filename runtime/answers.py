"""How an answer is read as the task's contract defines it, the same in the build and in the package: the build
holds its teacher to it (distillc.task), and a package's cascade holds the teacher it hands requests to
(cascade.py). Models often wrap what they write in a Markdown fence, and put a label in a JSON object or a
sentence; these say what counts.
"""

from __future__ import annotations

import json
import re

_PUNCT = re.compile(r"[^\w\s-]+")


def strip_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence; the content is what counts."""
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def normalize_label(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text).lower().split())


def match_label(labels: tuple[str, ...], text: str) -> tuple[str | None, str]:
    wanted = normalize_label(text)
    by_norm = {normalize_label(label): label for label in labels}
    if wanted in by_norm:
        return by_norm[wanted], ""
    words = f" {wanted} "
    mentioned = [label for norm, label in by_norm.items() if f" {norm} " in words]
    if len(mentioned) == 1:
        return mentioned[0], ""
    return None, f"answer is not one of the labels: {text[:200]!r}"


def label_field(text: str) -> str | None:
    """The label in a structured answer, `{"label": "..."}` (distillc.task.label.label_format); None when the
    answer is plain text, as from an endpoint that ignores or refused the schema."""
    if not text.startswith(("{", "```")):
        return None
    try:
        value = json.loads(strip_fence(text))
    except ValueError:
        return None
    label = value.get("label") if isinstance(value, dict) else None
    return label if isinstance(label, str) else None
