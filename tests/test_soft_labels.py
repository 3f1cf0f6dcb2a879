"""Labels the teacher cannot get wrong, and the teacher's distribution over them.

Label requests carry a schema whose only value is a label, and ask for each answer token's alternatives;
the journal keeps them, and each labeled row carries the distribution they imply. Endpoints that refuse
either get the request without it, with one warning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distillc import api
from distillc.build.events import Event
from distillc.teacher.soft_labels import from_token_logprobs, label_distribution
from tests.conftest import local_teacher_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import journaled

LABELS = ("positive", "negative")


def probs(user: str) -> dict[str, float]:
    """The test teacher's distribution: sure of its answer, less so for reviews that mention the staff."""
    sure = 0.6 if "staff" in user else 0.9
    return {label: sure if label == sentiment(user) else 1 - sure for label in LABELS}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_label_requests_are_constrained_and_soft_labels_come_from_the_journaled_logprobs(
    tmp_path: Path, tiny_model: Path
) -> None:
    texts = review_texts(40)

    def answer(user: str) -> str:  # left alone, this teacher rambles about cameras
        return "the camera one is hard to say" if "camera" in user else sentiment(user)

    with FakeTeacher(answer, constrain=True, label_probs=probs) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        result = api.build(spec, out=tmp_path / "out", until="label")
        bodies = teacher.bodies
    assert len(bodies) == len(texts)  # no answer broke the contract, so nothing was re-asked
    for body in bodies:
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == list(LABELS)
        assert body["logprobs"] is True and body["top_logprobs"] >= len(LABELS)
    summary = result.stage("label").summary
    assert (summary["labeled"], summary["rejected"], summary["soft_labels"]) == (len(texts), 0, len(texts))
    journal = journaled(tmp_path / "out")
    assert all(entry["logprobs"] and entry["text"].startswith('{"label"') for entry in journal)
    for row in rows(result.stage("label").artifact / "labeled.jsonl"):
        expected = probs(row["input"])
        if "camera" in row["input"]:  # constrained to the label set; its distribution is still the teacher's
            assert row["output"] in LABELS
        else:
            assert row["output"] == sentiment(row["input"])
        assert row["soft"] == pytest.approx(expected, abs=1e-6)


def test_an_endpoint_refusing_the_schema_and_logprobs_is_asked_without_them_and_says_so(
    tmp_path: Path, tiny_model: Path
) -> None:
    texts = review_texts(16)
    events: list[Event] = []
    with FakeTeacher(sentiment, refuse=("response_format", "logprobs"), label_probs=probs) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        result = api.build(spec, out=tmp_path / "out", until="label", emit=events.append)
        bodies = teacher.bodies
    summary = result.stage("label").summary
    assert (summary["labeled"], summary["soft_labels"]) == (len(texts), 0)
    assert "response_format" not in bodies[-1] and "logprobs" not in bodies[-1] and "top_logprobs" not in bodies[-1]
    warnings = [e.message for e in events if e.kind == "warning"]
    assert sum("refused response_format" in w for w in warnings) == 1
    assert sum("refused logprobs" in w and "no soft labels" in w for w in warnings) == 1
    assert all("soft" not in row for row in rows(result.stage("label").artifact / "labeled.jsonl"))


def lp(p: float) -> float:
    return math.log(p)


def test_a_distribution_is_read_where_each_label_leaves_the_answer() -> None:
    labels = ("billing", "bill dispute", "shipping")
    # '{"label":"' then "bill": billing and bill dispute both start so; shipping leaves here at 0.2.
    # Then "ing" (0.5) vs " dispute" (0.3) splits the two, of the 0.8 that took "bill".
    tokens = [
        ['{"label":"', lp(1.0), [['{"label":"', lp(1.0)]]],
        ["bill", lp(0.8), [["bill", lp(0.8)], ["ship", lp(0.2)]]],
        ["ing", lp(0.5), [["ing", lp(0.5)], [" dispute", lp(0.3)], ["ed", lp(0.2)]]],
        ['"}', lp(1.0), [['"}', lp(1.0)]]],
    ]
    got = from_token_logprobs(labels, '{"label":"billing"}', tokens)
    total = 0.8 * 0.5 + 0.8 * 0.3 + 0.2  # "ed" leads to no label: its mass is not a label's
    assert got == pytest.approx({"billing": 0.4 / total, "bill dispute": 0.24 / total, "shipping": 0.2 / total})


def test_plain_answers_and_labels_missing_from_the_alternatives() -> None:
    labels = ("positive", "negative", "neutral")
    tokens = [["Pos", lp(0.6), [["Pos", lp(0.6)], ["Neg", lp(0.3)], ["The", lp(0.1)]]], ["itive.", lp(1.0), []]]
    assert from_token_logprobs(labels, "Positive.", tokens) == pytest.approx(
        {"positive": 2 / 3, "negative": 1 / 3, "neutral": 0.0}
    )


def test_no_distribution_when_the_tokens_do_not_spell_the_answer_or_it_names_no_label() -> None:
    tokens = [["pos", lp(0.6), [["neg", lp(0.4)]]], ["itive", lp(1.0), []]]
    assert from_token_logprobs(LABELS, "negative", tokens) is None  # the tokens say something else
    assert from_token_logprobs(LABELS, "positive", tokens) is not None
    unsure = [["maybe", lp(1.0), []]]
    assert from_token_logprobs(LABELS, "maybe", unsure) is None
    assert label_distribution(LABELS, {"text": "positive"}) is None  # journaled without logprobs


def test_a_local_teachers_scores_become_their_softmax() -> None:
    entry = {"text": "positive", "label_logprobs": {"positive": math.log(3), "negative": 0.0}}
    assert label_distribution(LABELS, entry) == pytest.approx({"positive": 0.75, "negative": 0.25})
    assert label_distribution(LABELS, {"text": "positive", "label_logprobs": {"positive": 0.0}}) is None


def test_a_server_refusing_json_schema_with_a_500_gets_the_schema_as_json_object(
    tmp_path: Path, tiny_model: Path
) -> None:
    """llama-cpp-python's server answers a json_schema response_format with a 500; it takes the same schema
    as `{"type": "json_object", "schema": ...}`, and still decodes inside the label set."""
    texts = review_texts(16)
    events: list[Event] = []
    with FakeTeacher(
        lambda user: "hard to say", refuse=("json_schema",), refuse_status=500, constrain=True, label_probs=probs
    ) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        result = api.build(spec, out=tmp_path / "out", until="label", emit=events.append)
        bodies = teacher.bodies
    assert bodies[-1]["response_format"]["type"] == "json_object"
    assert bodies[-1]["response_format"]["schema"]["properties"]["label"]["enum"] == list(LABELS)
    summary = result.stage("label").summary
    assert (summary["labeled"], summary["rejected"], summary["soft_labels"]) == (len(texts), 0, len(texts))
    assert sum("refused json_schema" in e.message for e in events if e.kind == "warning") == 1


def test_alternatives_that_only_respell_the_shared_prefix_say_nothing_about_the_label() -> None:
    """llama.cpp's grammar forces `{ "label": "` token by token; where the model would have written `"`
    instead of `":`, that is another spelling of what every label shares, not a vote for any."""
    tokens = [
        ['{ "label', lp(0.01), []],
        ['":', lp(0.2), [['":', lp(0.2)], ['"', lp(0.7)]]],  # `"` leads every label on: left out
        [' "', lp(0.9), [[' "', lp(0.9)]]],
        ["game", lp(0.05), [["per", lp(0.5)], ["game", lp(0.05)], ["net", lp(0.15)]]],
        ["s", lp(0.01), []],
        ['"}', lp(0.5), []],
    ]
    got = from_token_logprobs(("games", "net", "mail"), '{ "label": "games"}', tokens)
    assert got == pytest.approx({"games": 0.25, "net": 0.75, "mail": 0.0})


def test_a_local_teacher_journals_every_labels_score_and_rows_carry_their_softmax(
    tmp_path: Path, tiny_model: Path
) -> None:
    texts = review_texts(10)
    spec = local_teacher_spec(tmp_path, tiny_model, texts)
    result = api.build(spec, out=tmp_path / "out", until="label")
    journal = {e["text"]: e for e in journaled(tmp_path / "out")}
    labeled = rows(result.stage("label").artifact / "labeled.jsonl")
    assert len(labeled) == len(texts) and result.stage("label").summary["soft_labels"] == len(texts)
    for row in labeled:
        assert set(row["soft"]) == set(LABELS) and sum(row["soft"].values()) == pytest.approx(1.0, abs=1e-5)
        assert max(row["soft"], key=row["soft"].get) == row["output"]  # the answer is the best-scored label
    entry = next(iter(journal.values()))
    scores = entry["label_logprobs"]
    expected = math.exp(scores["positive"]) / (math.exp(scores["positive"]) + math.exp(scores["negative"]))
    assert label_distribution(LABELS, entry)["positive"] == pytest.approx(expected)
