"""The output contract: a teacher answer becomes a training target, or a rejection with a reason.

Invalid answers are never trained on.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from distillc.spec.ir import TaskIR

_PUNCT = re.compile(r"[^\w\s-]+")


def normalize_label(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text).lower().split())


def accept(task: TaskIR, answer: str) -> tuple[str | None, str]:
    """(target, "") when the answer is valid, (None, reason) when it is not."""
    text = answer.strip()
    if not text:
        return None, "empty answer"
    if task.output_type == "label":
        return match_label(task.labels, label_field(text) or text)
    if task.output_type == "json":
        try:
            value = json.loads(strip_fence(text))
        except ValueError as exc:
            return None, f"not valid JSON: {exc}"
        if task.json_schema and (problem := schema_violation(task.json_schema, value)):
            return None, problem
        if task.json_schema:
            value = in_schema_order(json.loads(task.json_schema), value)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")), ""
    return text, ""


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
    """The label in a structured answer, `{"label": "..."}` (see openai_client.label_format); None when the
    answer is plain text, as from an endpoint that ignores or refused the schema."""
    if not text.startswith(("{", "```")):
        return None
    try:
        value = json.loads(strip_fence(text))
    except ValueError:
        return None
    label = value.get("label") if isinstance(value, dict) else None
    return label if isinstance(label, str) else None


def strip_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence; the content is what counts."""
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def in_schema_order(schema: Any, value: Any) -> Any:
    """`value` with each object's keys in the order of its schema's `properties` (others after, as given).

    The student's decoding is constrained by the schema, which writes properties in that order; a target in
    another order would teach the student a sequence its decoding then forbids."""
    if isinstance(value, dict) and isinstance(schema, dict):
        properties = schema.get("properties") or {}
        ordered = [k for k in properties if k in value] + [k for k in value if k not in properties]
        return {k: in_schema_order(properties.get(k, {}), value[k]) for k in ordered}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [in_schema_order(schema["items"], item) for item in value]
    return value


def schema_violation(schema: str, value: Any) -> str:
    """The first way `value` breaks the JSON Schema (text), or "" when it conforms."""
    error = next(iter(_validator(schema).iter_errors(value)), None)
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"does not match the JSON Schema at {where}: {error.message[:200]}"


@functools.lru_cache(maxsize=8)
def _validator(schema: str) -> Any:
    import jsonschema

    parsed = json.loads(schema)
    return jsonschema.validators.validator_for(parsed)(parsed)
