"""Teacher labeling: journaled answers, resume after failures and kills, the output contract, local scoring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from distillc import api
from distillc.errors import DistillcError
from distillc.spec.ir import TaskIR
from distillc.task import accept
from distillc.teacher.journal import request_key
from tests.conftest import edit_spec, review_texts, sentiment, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher


def label_task(labels: tuple[str, ...] = ("positive", "negative")) -> TaskIR:
    return TaskIR("Classify.", (), "label", labels, "")


def test_request_key_depends_on_model_messages_and_params() -> None:
    messages = [{"role": "user", "content": "hi"}]
    base = request_key("m", messages, {"temperature": 0})
    assert base == request_key("m", [dict(m) for m in messages], {"temperature": 0})
    assert base != request_key("m2", messages, {"temperature": 0})
    assert base != request_key("m", messages, {"temperature": 1})
    assert base != request_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0})


def test_request_key_is_that_of_journals_written_before() -> None:
    """Keys are the SHA-256 of json.dumps's canonical form: journals paid for earlier still answer."""
    texts = ['quote " back\\slash', "tab\tnew\nline\x00\x1f\x7f", "é 中文 🙂 \u2028 \ufeff", ""]
    messages = [{"role": "system", "content": "Classify."}] + [{"role": "user", "content": t} for t in texts]
    params = {"temperature": 1e-05, "top_p": 0.7, "max_tokens": 4, "logprobs": True, "seed": None, "big": 2**70}
    everything = {"model": "m", "messages": messages, "params": params}
    canonical = json.dumps(everything, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert request_key("m", messages, params) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate is refused, as it always was
        request_key("m", [{"role": "user", "content": "\ud800"}], params)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("positive", "positive"),
        ("  Positive.", "positive"),
        ("NEGATIVE!", "negative"),
        ("The sentiment is negative.", "negative"),
        ("positive or negative", None),
        ("neutral", None),
        ("", None),
    ],
)
def test_label_contract(answer: str, expected: str | None) -> None:
    target, reason = accept(label_task(), answer)
    assert target == expected
    assert bool(reason) == (expected is None)


def test_json_contract_accepts_fenced_json_and_rejects_prose() -> None:
    task = TaskIR("Extract.", (), "json", (), "")
    assert accept(task, '```json\n{"a": 1}\n```') == ('{"a":1}', "")
    assert accept(task, "sure! a is 1")[0] is None


def test_json_targets_follow_the_schemas_property_order_which_constrained_decoding_writes() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"type": "string"},
            "bugs": {"type": "array", "items": {"type": "object", "properties": {"z": {}, "a": {}}}},
        },
    }
    task = TaskIR("x", (), "json", (), json.dumps(schema))
    answer = '{"bugs": [{"a": 1, "z": 2}], "extra": 0, "kind": "fix"}'
    assert accept(task, answer) == ('{"kind":"fix","bugs":[{"z":2,"a":1}],"extra":0}', "")


def test_a_spec_keeps_its_schemas_property_order(tmp_path: Path, tiny_model: Path) -> None:
    from distillc.spec.load import load_spec

    schema = {"type": "object", "properties": {"kind": {"type": "string"}, "bugs": {"type": "array"}}}
    examples = [{"input": f"entry {i}", "output": {"kind": "fix", "bugs": []}} for i in range(3)]
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student=str(tiny_model), inputs=["a"])
    edit_spec(spec, {"task.output": {"type": "json", "schema": schema}, "task.examples": examples})
    assert list(json.loads(load_spec(spec).task.json_schema)["properties"]) == ["kind", "bugs"]


def test_invalid_answers_are_reasked_once_then_dead_lettered_never_trained_on(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(40)

    def answer(text: str) -> str:
        if "not valid" in text:  # the re-ask: battery reviews get it right the second time, camera ones never
            return "still no idea" if "camera" in text else "negative"
        if "camera" in text:
            return "no idea, camera"  # the re-ask quotes this answer back, so the server can tell
        return "no idea" if "battery" in text else sentiment(text)

    with FakeTeacher(answer) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        result = api.build(spec, out=tmp_path / "out", until="label")
        sent = teacher.requests
        reasks = [b for b in teacher.bodies if "not valid" in b["messages"][-1]["content"]]
        # A re-run (forced) pays for nothing: first answers and re-asks are both journaled.
        again = api.build(spec, out=tmp_path / "out", until="label", force=("label",))
        assert teacher.requests == sent
    summary = result.stage("label").summary
    battery, camera = (sum(word in t for t in texts) for word in ("battery", "camera"))
    assert battery > 0 and camera > 0
    assert sent == len(texts) + battery + camera  # one re-ask each, no more
    assert summary["reasked"] == battery + camera and summary["fixed_by_reask"] == battery
    assert (summary["labeled"], summary["rejected"]) == (len(texts) - camera, camera)
    # The re-ask carries the invalid answer and what is wrong with it.
    assert reasks[0]["messages"][-2]["content"] in ("no idea", "no idea, camera")
    assert "not one of the labels" in reasks[0]["messages"][-1]["content"]
    dead = [
        json.loads(line) for line in (result.stage("label").artifact / "dead_letter.jsonl").read_text().splitlines()
    ]
    assert len(dead) == camera
    assert all(
        d["kind"] == "invalid" and d["answer"] == "still no idea" and d["first_answer"] == "no idea, camera"
        for d in dead
    )
    labeled = (result.stage("label").artifact / "labeled.jsonl").read_text()
    assert "camera" not in labeled
    assert again.stage("label").summary["labeled"] == summary["labeled"]


def test_failed_requests_keep_paid_answers_and_rerun_sends_only_the_missing(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(30)
    broken = {"on": True}

    def flaky(text: str) -> str:
        if broken["on"] and "camera" in text:
            raise RuntimeError("injected failure")
        return sentiment(text)

    failing = sum("camera" in t for t in texts)
    assert failing > 0
    with FakeTeacher(flaky) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", until="label")
        assert caught.value.code == "E402"
        assert f"{failing} of {len(texts)} teacher requests failed" in caught.value.message
        sent_first = teacher.requests
        broken["on"] = False
        result = api.build(spec, out=tmp_path / "out", until="label")
        assert teacher.requests - sent_first == failing  # the paid answers came from the journal
        assert result.stage("label").summary["labeled"] == len(texts)


def test_missing_api_key_is_a_clear_error_before_any_request(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path, base_url="", student=str(tiny_model), inputs=review_texts(10))
    edit_spec(spec, {"teacher.base_url": None})
    monkeypatch.delenv("DISTILLC_TEST_KEY", raising=False)
    with pytest.raises(DistillcError) as caught:
        api.build(spec, out=tmp_path / "out")
    assert caught.value.code == "E401"
    assert "DISTILLC_TEST_KEY is not set" in caught.value.message


def test_local_teacher_scores_labels_like_an_unpadded_forward(tiny_model: Path) -> None:
    """Batched, left-padded, last-positions-only scoring equals scoring each row on its own."""
    import torch

    from distillc.student.models import load_causal_lm
    from distillc.teacher.providers.local import label_logprobs

    model, tokenizer = load_causal_lm(str(tiny_model))
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [encode(p) for p in ("the kettle was lovely", "the screen was broken and the app too", "x")]
    labels = [encode(label) + [tokenizer.eos_token_id] for label in ("positive", "negative", "mixed feelings")]
    with torch.inference_mode():
        batched = label_logprobs(model, tokenizer.pad_token_id, prompts, labels)
        for prompt, row in zip(prompts, batched, strict=True):
            for ids, score in zip(labels, row, strict=True):
                logp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0], -1)
                alone = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ids))
                assert score == pytest.approx(alone, abs=1e-4)


def test_failures_within_max_failed_share_are_dead_lettered_and_the_build_goes_on(
    tmp_path: Path, tiny_model: Path
) -> None:
    texts = review_texts(30)

    def flaky(text: str) -> str:
        if "camera" in text:
            raise RuntimeError("injected failure")
        return sentiment(text)

    failing = sum("camera" in t for t in texts)
    with FakeTeacher(flaky) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        set_teacher(spec, max_failed_share=0.5, max_retries=0)
        result = api.build(spec, out=tmp_path / "out", until="split")
    label = result.stage("label")
    assert label.summary["failed"] == failing
    assert label.summary["labeled"] == len(texts) - failing
    assert "HTTP 500: injected failure" in label.summary["dead_letter"][0]["reason"]
    dead = [line for line in (label.artifact / "dead_letter.jsonl").read_text().splitlines() if line]
    assert len(dead) == failing and all("camera" in line for line in dead)


def test_a_changed_endpoint_reasks_and_says_why(tmp_path: Path, tiny_model: Path) -> None:
    """The same model name at another base_url is another teacher: the journal of the first (a mock
    server, say) is not replayed for the second, and the label stage says the teacher changed."""
    texts = review_texts(12)
    with FakeTeacher(sentiment) as mock, FakeTeacher(sentiment) as real:
        spec = write_spec(tmp_path, base_url=mock.base_url, student=str(tiny_model), inputs=texts)
        api.build(spec, out=tmp_path / "out", until="label")
        assert mock.requests == len(texts)
        edit_spec(spec, {"teacher.base_url": real.base_url})
        events: list[Any] = []
        api.build(spec, out=tmp_path / "out", until="label", emit=events.append)
        assert real.requests == len(texts) and mock.requests == len(texts)
    started = [e for e in events if e.kind == "stage_start" and e.stage == "label"]
    assert started and "changed: spec.teacher" in started[0].message
