"""Answers already paid for are imported, never asked again: OpenAI chat fine-tuning files, Batch API input and
output files, gateway logs and input/answer pairs, each read from files in its vendor's documented shape."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillc import api
from distillc.build.events import Event
from distillc.plan import plan
from distillc.spec import load_spec
from distillc.spec.diagnostics import SpecError
from distillc.teacher.journal import JournalView, journal_path
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import read_json, stage_artifact

INSTRUCTIONS = "Classify the sentiment of the review."
TEMPLATE = "Review to classify:\n{text}\nAnswer with one word."
EXTRACT = r"Review to classify:\n(?P<input>.*)\nAnswer with one word\."


def chat(text: str, answer: str | None, system: str = INSTRUCTIONS) -> dict[str, Any]:
    """One conversation as OpenAI's chat fine-tuning format holds it."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": TEMPLATE.format(text=text)}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def write_lines(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def import_spec(tmp_path: Path, base_url: str, source: dict[str, Any], bare: list[str] | None = None) -> Path:
    """The shared review spec reading `source` (and, with `bare`, a second source of bare inputs)."""
    spec = write_spec(tmp_path, base_url=base_url, student="unused", inputs=bare or [])
    sources = [source] + ([{"path": "data/reviews.jsonl", "field": "text"}] if bare else [])
    edit_spec(spec, {"inputs.source": None, "inputs.sources": sources})
    return spec


def labeled(build_dir: Path) -> dict[str, str]:
    rows = (stage_artifact(build_dir, "label") / "labeled.jsonl").read_text().splitlines()
    return {r["input"]: r["output"] for r in map(json.loads, rows)}


def dead_letters(build_dir: Path) -> list[dict[str, Any]]:
    rows = (stage_artifact(build_dir, "label") / "dead_letter.jsonl").read_text().splitlines()
    return [json.loads(r) for r in rows]


def imported_entries(build_dir: Path) -> list[dict[str, Any]]:
    with JournalView(journal_path(build_dir)) as journal:
        return [e for e in journal.entries() if "imported" in e]


def test_openai_chat_answers_are_imported_with_provenance_and_the_rest_asked(tmp_path: Path) -> None:
    """The last assistant turn is the answer; a conversation without one is asked; `extract` cuts the bare
    review out of the production template; the journal says which file and line each answer came from."""
    texts = review_texts(12)
    # The incumbent answered "negative" to everything (a rule the teacher does not follow): its answers are
    # what the labels must be, so a re-asked input would show.
    records = [chat(t, "Negative" if n % 4 else None) for n, t in enumerate(texts)]
    file = write_lines(tmp_path / "data" / "ft.jsonl", records)
    source = {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT}
    with FakeTeacher(sentiment) as teacher:
        spec = import_spec(tmp_path, teacher.base_url, source)
        out = tmp_path / "out"
        result = api.build(spec, out=out, until="label")
        assert teacher.requests == 3  # the three conversations without an assistant turn
        asked = [b["messages"][-1]["content"] for b in teacher.bodies]
    rows = labeled(out)
    assert set(rows) == set(texts)  # the bare reviews, not the template around them
    for n, text in enumerate(texts):
        assert rows[text] == ("negative" if n % 4 else sentiment(text)), text
    assert all(texts[n] in " ".join(asked) for n in (0, 4, 8))
    entries = imported_entries(out)
    assert len(entries) == 9
    sha = __import__("hashlib").sha256(file.read_bytes()).hexdigest()
    assert {(e["imported"]["file"], e["imported"]["sha256"]) for e in entries} == {("ft.jsonl", sha)}
    assert sorted(e["imported"]["line"] for e in entries) == [n + 1 for n in range(12) if n % 4]
    assert all(e["usage"] == {"prompt_tokens": 0, "completion_tokens": 0} and "usd" not in e for e in entries)
    label = result.stage("label").summary
    assert label["imported"] == {"labeled": 9, "invalid": 0, "asked_instead": 0, "new_to_journal": 9}
    assert label["requests_sent"] == 3


def test_openai_batch_input_and_output_are_joined_by_custom_id(tmp_path: Path) -> None:
    """The output file's lines come in any order; a failed request (an error, a non-200 status) and one the
    output lacks are asked again."""
    texts = review_texts(6)
    requests = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", **chat(t, None)},
        }
        for n, t in enumerate(texts)
    ]
    write_lines(tmp_path / "data" / "batch_in.jsonl", requests)

    def output(n: int, status: int = 200, answer: str = "negative") -> dict[str, Any]:
        body = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        }
        return {
            "id": f"batch_req_{n}",
            "custom_id": f"req-{n}",
            "response": {"status_code": status, "request_id": f"r{n}", "body": body},
            "error": None,
        }

    failed = {
        "id": "batch_req_3",
        "custom_id": "req-3",
        "response": None,
        "error": {"code": "server_error", "message": "failed"},
    }
    write_lines(tmp_path / "data" / "batch_out.jsonl", [output(5), output(0), output(2, status=500), failed, output(1)])
    source = {
        "path": "data/batch_in.jsonl",
        "format": "openai_batch",
        "output": "data/batch_out.jsonl",
        "extract": EXTRACT,
    }
    with FakeTeacher(sentiment) as teacher:
        out = tmp_path / "out"
        api.build(import_spec(tmp_path, teacher.base_url, source), out=out, until="label")
        assert teacher.requests == 3  # req-2 (500), req-3 (error), req-4 (not in the output)
    rows = labeled(out)
    assert [rows[texts[n]] for n in (0, 1, 5)] == ["negative"] * 3
    assert [rows[texts[n]] for n in (2, 3, 4)] == [sentiment(texts[n]) for n in (2, 3, 4)]
    assert sorted(e["imported"]["line"] for e in imported_entries(out)) == [1, 2, 6]


def test_chat_log_captures_in_a_folder_and_litellm_logs_are_read(tmp_path: Path) -> None:
    """A folder of captures (request/response records) and a LiteLLM log (messages, response, status):
    failed calls give no answer, so their inputs are asked."""
    texts = review_texts(6)

    def completion(answer: str) -> dict[str, Any]:
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
        }

    captures = [
        {"request": {"model": "m", **chat(texts[0], None)}, "response": completion("negative"), "status": 200},
        {"request": {"model": "m", **chat(texts[1], None)}, "response": {"error": {"message": "rate"}}, "status": 429},
    ]
    write_lines(tmp_path / "data" / "logs" / "capture-001.jsonl", captures)
    litellm = [
        {
            "model": "m",
            "messages": chat(texts[2], None)["messages"],
            "response": completion("positive"),
            "status": "success",
        },
        {
            "model": "m",
            "messages": chat(texts[3], None)["messages"],
            "response": None,
            "status": "failure",
            "error_str": "timeout",
        },
    ]
    write_lines(tmp_path / "data" / "logs" / "litellm.jsonl", litellm)
    (tmp_path / "data" / "logs" / "notes.txt").write_text("not a capture\n")
    source = {"path": "data/logs", "format": "chat_log", "extract": EXTRACT}
    with FakeTeacher(sentiment) as teacher:
        out = tmp_path / "out"
        api.build(import_spec(tmp_path, teacher.base_url, source, bare=texts[4:]), out=out, until="label")
        assert teacher.requests == 4  # the two failed calls, and the two bare inputs
    rows = labeled(out)
    assert rows[texts[0]] == "negative" and rows[texts[2]] == "positive"
    assert {e["imported"]["file"] for e in imported_entries(out)} == {"capture-001.jsonl", "litellm.jsonl"}


def test_pairs_from_jsonl_csv_and_parquet(tmp_path: Path) -> None:
    texts = review_texts(9)
    answers = ["negative" if n % 2 else "positive" for n in range(9)]
    write_lines(tmp_path / "data" / "pairs.jsonl", [{"q": t, "a": a} for t, a in zip(texts[:3], answers, strict=False)])
    with (tmp_path / "data" / "pairs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["q", "a"])
        writer.writerows([(texts[3], answers[3]), (texts[4], ""), (texts[5], answers[5])])  # "" is no answer
    pq.write_table(pa.table({"q": texts[6:], "a": answers[6:]}), tmp_path / "data" / "pairs.parquet")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=[])
        sources = [
            {"path": f"data/pairs.{ext}", "format": "pairs", "field": "q", "answer_field": "a"}
            for ext in ("jsonl", "csv", "parquet")
        ]
        edit_spec(spec, {"inputs.source": None, "inputs.sources": sources})
        out = tmp_path / "out"
        api.build(spec, out=out, until="label")
        assert teacher.requests == 1  # the csv row without an answer
    rows = labeled(out)
    assert [rows[t] for n, t in enumerate(texts) if n != 4] == [a for n, a in enumerate(answers) if n != 4]
    assert rows[texts[4]] == sentiment(texts[4])


def test_an_invalid_imported_answer_is_dead_lettered_or_asked_with_reask_invalid(tmp_path: Path) -> None:
    texts = review_texts(4)
    records = [chat(texts[0], "NEGATIVE."), chat(texts[1], "meh"), chat(texts[2], "positive"), chat(texts[3], "")]
    write_lines(tmp_path / "data" / "ft.jsonl", records)
    source = {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT}
    with FakeTeacher(sentiment) as teacher:
        spec = import_spec(tmp_path, teacher.base_url, source)
        out = tmp_path / "out"
        api.build(spec, out=out, until="label")
        assert teacher.requests == 0
        rows = labeled(out)
        assert rows == {texts[0]: "negative", texts[2]: "positive"}  # "NEGATIVE." is normalized
        dead = {d["input"]: d for d in dead_letters(out)}
        assert set(dead) == {texts[1], texts[3]}
        assert dead[texts[1]]["answer"] == "meh" and "imported (ft.jsonl:2)" in dead[texts[1]]["reason"]

        edit_spec(spec, {"inputs.sources": [source | {"reask_invalid": True}]})
        api.build(spec, out=out, until="label")
        assert teacher.requests == 2  # only the two invalid ones
    assert labeled(out) == {
        t: "negative" if n == 0 else ("positive" if n == 2 else sentiment(t)) for n, t in enumerate(texts)
    }


def test_a_differing_system_prompt_warns_with_both_texts(tmp_path: Path) -> None:
    texts = review_texts(3)
    records = [chat(t, "negative", system="You are SupportBot. Reply with the sentiment.") for t in texts]
    write_lines(tmp_path / "data" / "ft.jsonl", records)
    source = {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT}
    events: list[Event] = []
    with FakeTeacher(sentiment) as teacher:
        api.build(
            import_spec(tmp_path, teacher.base_url, source), out=tmp_path / "out", until="inputs", emit=events.append
        )
    [warning] = [e for e in events if e.kind == "warning" and "system prompt" in e.message]
    assert "3 imported inputs" in warning.message
    assert "You are SupportBot" in warning.message and INSTRUCTIONS in warning.message


def test_a_reimport_is_a_no_op_and_an_edited_line_asks_nothing(tmp_path: Path) -> None:
    texts = review_texts(8)
    file = write_lines(tmp_path / "data" / "ft.jsonl", [chat(t, "negative") for t in texts])
    source = {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT}
    with FakeTeacher(sentiment) as teacher:
        spec = import_spec(tmp_path, teacher.base_url, source)
        out = tmp_path / "out"
        api.build(spec, out=out, until="label")
        again = api.build(spec, out=out, until="label")
        assert {s.name: s.status for s in again.stages} == {"inputs": "hit", "label": "hit"}
        lines = file.read_text().splitlines()
        lines[4] = json.dumps(chat(texts[4], "positive"))
        file.write_text("\n".join(lines) + "\n")
        edited = api.build(spec, out=out, until="label")
        assert teacher.requests == 0
    assert edited.stage("label").summary["imported"]["new_to_journal"] == 1
    assert labeled(out)[texts[4]] == "positive"
    assert len(imported_entries(out)) == 9  # the first answer of line 5 stays, as journaled


def test_plan_shows_imported_and_prices_only_what_is_asked(tmp_path: Path) -> None:
    texts = review_texts(10)
    write_lines(tmp_path / "data" / "ft.jsonl", [chat(t, "negative" if n < 6 else None) for n, t in enumerate(texts)])
    source = {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT}
    spec = import_spec(tmp_path, "http://127.0.0.1:9/v1", source)
    edit_spec(spec, {"teacher.price_per_1m_tokens": {"input": 1.0, "output": 2.0}})
    planned = plan(spec, out=tmp_path / "out")
    assert planned.imported == 6 and planned.journaled == 0
    assert planned.teacher is not None and planned.teacher.requests == 4
    assert planned.as_dict()["imported"] == 6


def test_import_options_are_checked_where_they_are_written(tmp_path: Path) -> None:
    write_lines(tmp_path / "data" / "ft.jsonl", [chat("x", "negative")])
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="unused", inputs=["a"])
    bad = [
        {"path": "data/ft.jsonl", "format": "openai_chat", "extract": "no group here"},
        {"path": "data/ft.jsonl", "format": "openai_chat", "extract": "(unclosed"},
        {"path": "data/ft.jsonl", "format": "openai_chat", "answer_field": "a"},
        {"path": "data/ft.jsonl", "format": "pairs", "field": "q"},
        {"path": "data/ft.jsonl", "format": "openai_batch"},
        {"path": "data/ft.jsonl", "format": "openai_batch", "output": "data/missing.jsonl"},
        {"path": "data/reviews.jsonl", "field": "text", "extract": "(?P<input>.*)"},
    ]
    edit_spec(spec, {"inputs.source": None, "inputs.sources": bad})
    try:
        load_spec(spec)
    except SpecError as exc:
        text = exc.render() if hasattr(exc, "render") else str(exc)
    else:
        raise AssertionError("the spec should not load")
    expected = [
        ("E128", "no group named 'input'"),
        ("E128", "not a regular expression"),
        ("E127", "'answer_field' is not used by format 'openai_chat'"),
        ("E115", "need 'answer_field'"),
        ("E115", "need 'output'"),
        ("E112", "missing.jsonl"),
        ("E127", "'extract' is not used by format 'jsonl'"),
    ]
    for code, line_hint in expected:
        assert f"error[{code}]" in text and line_hint in text, (code, line_hint, text)
    assert "spec.yaml:" in text


def test_answers_from_the_journal_read_back_as_the_report_shows(tmp_path: Path) -> None:
    """The inputs stage's report counts imported rows among those kept."""
    texts = review_texts(5)
    write_lines(tmp_path / "data" / "ft.jsonl", [chat(t, "negative" if n else None) for n, t in enumerate(texts)])
    source = {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT}
    with FakeTeacher(sentiment) as teacher:
        out = tmp_path / "out"
        result = api.build(import_spec(tmp_path, teacher.base_url, source), out=out, until="label")
    assert result.stage("inputs").summary["imported"] == 4
    assert read_json(out / "report.json")["label"]["imported"]["labeled"] == 4


@pytest.mark.parametrize("dedup", ["exact", "off"])
def test_an_input_both_imported_and_bare_counts_once_and_is_never_asked(tmp_path: Path, dedup: str) -> None:
    """Answered sources are read first, whatever the spec's order: the bare copy is the exact duplicate (with
    `dedup: off` too, which keeps a source's own repeats: an answer already paid for is not bought again)."""
    texts = review_texts(4)
    write_lines(tmp_path / "data" / "ft.jsonl", [chat(t, "negative") for t in texts[:2]])
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=[texts[1].upper(), *texts[2:]])
        sources = [
            {"path": "data/reviews.jsonl", "field": "text"},  # bare, listed first
            {"path": "data/ft.jsonl", "format": "openai_chat", "extract": EXTRACT},
        ]
        edit_spec(spec, {"inputs.source": None, "inputs.sources": sources, "inputs.dedup": dedup})
        out = tmp_path / "out"
        result = api.build(spec, out=out, until="label")
        assert teacher.requests == 2  # texts[2] and texts[3]
    inputs = result.stage("inputs").summary
    assert inputs["kept"] == 4 and inputs["duplicates"] == 1 and inputs["imported"] == 2
    assert labeled(out)[texts[1]] == "negative"
