"""Generated inputs: few-shot prompts, robust parsing, deduplication, diversity figures, journaled replay."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from distillc import api
from distillc.build.artifacts import read_jsonl
from distillc.data.dedup import NearDuplicateIndex
from distillc.data.normalize import distinct_ngram_ratio, normalize
from distillc.errors import DistillcError
from distillc.spec import load_spec
from distillc.spec.ir import cache_view
from distillc.teacher.generation import parse
from tests.conftest import NEGATIVE, POSITIVE, THINGS, edit_spec, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher

EXAMPLES = ["the kettle was lovely", "the screen was broken", "the staff was superb and the room too"]


def writer(prompt: str) -> str:
    """A teacher that writes reviews; some answers repeat themselves, copy an example, or come as a list."""
    rng = random.Random(hashlib.sha256(prompt.encode()).hexdigest())
    n = int(prompt.split("Write ")[1].split(" new inputs")[0])
    reviews = [
        f"{rng.choice(['honestly', 'wow', 'so', 'well'])} the {rng.choice(THINGS)} was "
        f"{rng.choice(POSITIVE + NEGATIVE)} {rng.choice(['today', 'again', 'at first', 'for me'])} "
        f"{rng.randint(1, 10_000)}"
        for _ in range(n)
    ]
    reviews[-1] = reviews[0].upper() + "!"  # an exact duplicate once normalized
    reviews[-2] = EXAMPLES[0]  # a copy of an example
    if rng.random() < 0.3:
        return "\n".join(f"{i + 1}. {r}" for i, r in enumerate(reviews))
    return "```json\n" + json.dumps(reviews) + "\n```"


def generation_spec(tmp_path: Path, base_url: str, tiny_model: Path, count: int = 40) -> Path:
    spec = write_spec(tmp_path, base_url=base_url, student=str(tiny_model), inputs=[])
    generate = {"count": count, "per_request": 8, "seed": 3, "guidance": "short reviews of household things"}
    edit_spec(spec, {"inputs": {"generate": generate}})
    return spec


def test_generated_inputs_are_deduplicated_measured_and_replayed_from_the_journal(
    tmp_path: Path, tiny_model: Path
) -> None:
    with FakeTeacher(writer) as teacher:
        spec = generation_spec(tmp_path, teacher.base_url, tiny_model)
        result = api.build(spec, out=tmp_path / "out", until="inputs")
        record = result.stage("inputs")
        inputs = [r["input"] for r in read_jsonl(record.artifact / "inputs.jsonl")]
        assert len(inputs) == 40
        assert len({normalize(t) for t in inputs}) == 40
        assert not {normalize(t) for t in inputs} & {normalize(e) for e in EXAMPLES}
        summary = record.summary
        assert summary["rejected"]["duplicate"] > 0 and summary["rejected"]["too close to an example"] > 0
        assert 0 < summary["duplicate_rate"] < 1
        assert summary["distinct_1"] > 0 and summary["distinct_2"] > summary["distinct_1"]
        sent = teacher.requests
        assert sent == summary["requests_sent"] == summary["requests"]
        prompt = teacher.bodies[0]["messages"][1]["content"]
        assert "Write 8 new inputs" in prompt and sum(e in prompt for e in EXAMPLES) >= 3
        assert "short reviews of household things" in teacher.bodies[0]["messages"][0]["content"]

        again = api.build(spec, out=tmp_path / "out", until="inputs", force=("inputs",))
        assert teacher.requests == sent  # every answer came from the journal
        replayed = [r["input"] for r in read_jsonl(again.stage("inputs").artifact / "inputs.jsonl")]
        assert replayed == inputs


def test_a_teacher_that_never_gives_usable_inputs_is_a_clear_error(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(lambda prompt: "[]") as teacher:
        spec = generation_spec(tmp_path, teacher.base_url, tiny_model, count=5)
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", until="inputs")
    assert caught.value.code == "E404"
    assert teacher.requests == 3  # the default cap: 3x the requests the count needs


def test_the_generating_teacher_is_part_of_the_inputs_key(tmp_path: Path, tiny_model: Path) -> None:
    spec = generation_spec(tmp_path, "http://127.0.0.1:9/v1", tiny_model)
    before = cache_view(load_spec(spec).inputs)
    edit_spec(spec, {"teacher.model": "another-teacher"})
    assert cache_view(load_spec(spec).inputs) != before


def test_generated_inputs_do_not_depend_on_how_many_requests_run_at_once(tmp_path: Path, tiny_model: Path) -> None:
    """max_concurrency stays out of cache keys (it only sets speed), so it must not change what is
    generated: rounds have a fixed size, whatever runs in parallel."""
    generated = []
    with FakeTeacher(writer) as teacher:
        for concurrency in (1, 5):
            folder = tmp_path / f"c{concurrency}"
            folder.mkdir()
            spec = generation_spec(folder, teacher.base_url, tiny_model, count=30)
            set_teacher(spec, max_concurrency=concurrency)
            record = api.build(spec, out=folder / "out", until="inputs").stage("inputs")
            generated.append([r["input"] for r in read_jsonl(record.artifact / "inputs.jsonl")])
    assert len(generated[0]) == 30 and generated[0] == generated[1]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('["one", "two"]', ["one", "two"]),
        ('Sure! Here they are:\n```json\n["one", "two"]\n```', ["one", "two"]),
        ("1. one\n2) two\n- three\n* four", ["one", "two", "three", "four"]),
        ('["one", 2, null, ""]', ["one", "2"]),
        ("", []),
    ],
)
def test_parse_answers(answer: str, expected: list[str]) -> None:
    assert parse(answer) == expected


def test_near_duplicates_are_caught_and_different_texts_kept() -> None:
    index = NearDuplicateIndex()
    index.add("The battery died after two days of light use.")
    assert index.check("the battery died after two days of light use!!") == "duplicate"
    assert index.check("The battery died after 2 days of light use.") == "near-duplicate"
    assert index.check("Great coffee: strong, smooth and never bitter.") == ""


def test_distinct_ngram_ratio() -> None:
    assert distinct_ngram_ratio(["a b", "a b"], 1) == 0.5
    assert distinct_ngram_ratio(["a b c", "d e f"], 2) == 1.0


def test_plan_prices_generation_without_calling_the_teacher(tmp_path: Path, tiny_model: Path) -> None:
    from distillc.plan import plan, render

    with FakeTeacher(writer) as teacher:
        spec = generation_spec(tmp_path, teacher.base_url, tiny_model, count=40)
        set_teacher(spec, price_per_1m_tokens={"input": 1, "output": 2})
        planned = plan(spec, out=tmp_path / "out")
        assert teacher.requests == 0
        assert planned.teacher is not None
        assert planned.teacher.requests == 5 + 40  # ceil(40 / 8) writing requests, then 40 to label
        assert planned.teacher.usd > 0
        assert "inputs: 40 to generate" in render(planned)
        api.build(spec, out=tmp_path / "out", until="inputs")
        sent = teacher.requests
        again = plan(spec, out=tmp_path / "out")  # inputs cached now: the real ones are priced
        assert teacher.requests == sent
        assert again.teacher is not None and again.teacher.requests == 40


def test_a_failed_generation_round_stops_and_a_rerun_goes_on_without_paying_twice(
    tmp_path: Path, tiny_model: Path
) -> None:
    with FakeTeacher(writer) as teacher:  # the uninterrupted run
        spec = generation_spec(tmp_path / "reference", teacher.base_url, tiny_model, count=80)
        reference = api.build(spec, out=tmp_path / "reference" / "out", until="inputs")
        expected = [r["input"] for r in read_jsonl(reference.stage("inputs").artifact / "inputs.jsonl")]
        reference_requests = teacher.requests
    calls = {"n": 0, "broken": True}

    def sixth(user: str, attempt: int) -> str | None:  # the 6th request: one of the second round's 4
        calls["n"] += 1
        return "500" if calls["broken"] and calls["n"] == 6 else None

    with FakeTeacher(writer, fault=sixth) as teacher:
        spec = generation_spec(tmp_path / "crashed", teacher.base_url, tiny_model, count=80)
        set_teacher(spec, max_retries=0)
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "crashed" / "out", until="inputs")
        assert caught.value.code == "E407" and "generation stops here" in caught.value.message
        first_run = teacher.requests
        [(_, failed_prompt, _)] = teacher.faults
        last_user = lambda body: [m for m in body["messages"] if m["role"] == "user"][-1]["content"]  # noqa: E731
        answered = {json.dumps(b["messages"]) for b in teacher.bodies if last_user(b) != failed_prompt}
        calls["broken"] = False
        result = api.build(spec, out=tmp_path / "crashed" / "out", until="inputs")
        resent = [json.dumps(b["messages"]) for b in teacher.bodies[first_run:]]
    assert [r["input"] for r in read_jsonl(result.stage("inputs").artifact / "inputs.jsonl")] == expected
    assert not set(resent) & answered  # nothing answered in the first run was asked again
    assert teacher.requests == reference_requests + 1  # the one failure, sent twice; all else once
    assert first_run == 8 < reference_requests  # it stopped at the end of the failed round, the second


def test_generation_cost_counts_against_the_budget_of_labeling(tmp_path: Path, tiny_model: Path) -> None:
    answer = lambda prompt: writer(prompt) if "new inputs" in prompt else "positive"  # noqa: E731
    with FakeTeacher(answer, prompt_tokens=1400) as teacher:
        spec = generation_spec(tmp_path, teacher.base_url, tiny_model, count=16)
        set_teacher(spec, price_per_1m_tokens={"input": 100})
        edit_spec(spec, {"budget.max_usd": 0.5})
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out", until="label")
        inputs = api.build(spec, out=tmp_path / "out", until="inputs").stage("inputs").summary
        assert teacher.requests == 3  # labeling sent nothing
    # 3 generation requests billed 1,400 prompt tokens each at $100 per 1M: $0.42. Labeling 16 inputs is
    # estimated at about $0.16 more: over the $0.50, refused before sending.
    assert inputs["usd"] == pytest.approx(0.42) and inputs["usage"]["prompt_tokens"] == 4200
    assert caught.value.code == "E502"
    assert "after $0.4200 already spent in this build folder" in caught.value.message
