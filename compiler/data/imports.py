"""Reading answers already paid for, in the shapes users hold them.

- `openai_chat`: OpenAI's chat fine-tuning JSONL, `{"messages": [...]}`; the last assistant turn is the answer.
- `openai_batch`: a Batch API input file (`custom_id`, `body.messages`) joined with its output file
  (`custom_id`, `response.body.choices[0].message`) by custom_id.
- `chat_log`: request/response records as logging gateways write them: `{"request": {"messages": ...},
  "response": {"choices": ...}}` (what `distillc capture` writes), or LiteLLM's `{"messages": ...,
  "response": ...}`; a failed call (an `error`, or a status other than success) gives no answer.

Each row is the last user message (or the group `input` of `extract` applied to it), the answer (None when the
record holds none: the input is then asked of the teacher), the system prompt it was sent with, and its line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Row:
    """One row of a source: its input, or the problem that makes it unusable."""

    line: int
    text: Any = None
    answer: str | None = None
    system: str | None = None
    problem: str = ""
    gold: Any = None  # a human label, where the row has one


def message_rows(path: Path, fmt: str, extract: str, output: Path | None = None, gold_field: str = "") -> Iterator[Row]:
    """The rows of one file of a message format (`openai_chat`, `openai_batch` or `chat_log`); `gold_field`
    names a key of the record beside the messages holding a human label."""
    pattern = re.compile(extract, re.DOTALL) if extract else None
    answers = batch_answers(output) if fmt == "openai_batch" and output is not None else {}
    for line, record, problem in _json_lines(path):
        if problem:
            yield Row(line, problem=problem)
            continue
        if fmt == "openai_chat":
            row = _conversation(line, record.get("messages"))
        elif fmt == "openai_batch":
            body = record.get("body") if isinstance(record.get("body"), dict) else {}
            row = _conversation(line, body.get("messages"), answered=False)
            if not row.problem:
                row.answer = answers.get(str(record.get("custom_id")))
        else:
            row = _logged_call(line, record)
        if gold_field:
            row.gold = record.get(gold_field)
        if pattern is not None and not row.problem:
            found = pattern.search(row.text)
            if found is None or found.group("input") is None:
                row.problem = f"extract did not match the user message {row.text[:80]!r}"
            else:
                row.text = found.group("input")
        yield row


def batch_answers(output: Path) -> dict[str, str]:
    """The Batch API output file's answers by custom_id; failed requests (an error, a status other than 200)
    are left out, so their inputs are asked again. Memory: the answers' text."""
    answers: dict[str, str] = {}
    for _, record, problem in _json_lines(output):
        if problem or record.get("error"):
            continue
        response = record.get("response")
        if not isinstance(response, dict) or response.get("status_code", 200) != 200:
            continue
        if (answer := _completion_text(response.get("body"))) is not None:
            answers[str(record.get("custom_id"))] = answer
    return answers


def _logged_call(line: int, record: dict[str, Any]) -> Row:
    request = record.get("request") if isinstance(record.get("request"), dict) else record
    row = _conversation(line, request.get("messages"), answered=False)
    failed = record.get("error") or str(record.get("status", "success")).lower() not in {"success", "200", "ok"}
    if not row.problem and not failed:
        row.answer = _completion_text(record.get("response"))
    return row


def _conversation(line: int, messages: Any, answered: bool = True) -> Row:
    """The last user message and, with `answered`, the last assistant message after it (the answer)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return Row(line, problem="no 'messages' list")
    answer = None
    if answered and messages and messages[-1].get("role") == "assistant":
        answer = _text(messages[-1].get("content"))
        messages = messages[:-1]
    users = [m for m in messages if m.get("role") == "user"]
    if not users or (text := _text(users[-1].get("content"))) is None:
        return Row(line, problem="no user message with text")
    system = next((_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")), None)
    return Row(line, text, answer, system)


def _completion_text(body: Any) -> str | None:
    """choices[0].message.content of a chat completion, or None."""
    try:
        return _text(body["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return None


def _text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return None


def parse_json(line: str) -> Any:
    """One JSON document: orjson's speed, and what only the standard library takes (integers over 64 bits)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except ValueError as exc:
                yield n, {}, f"invalid JSON ({exc.msg if isinstance(exc, json.JSONDecodeError) else exc})"
                continue
            if not isinstance(record, dict):
                yield n, {}, "not a JSON object"
            else:
                yield n, record, ""
