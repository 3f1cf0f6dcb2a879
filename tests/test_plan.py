"""`distillc plan` and the budget: numbers checked by hand, refusals before spending, a stop while spending."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import yaml

from distillc import api
from distillc.errors import DistillcError
from distillc.plan import plan, render
from distillc.student import models
from distillc.teacher import cost
from distillc.teacher.journal import journal_path
from tests.conftest import edit_spec, review_texts, sentiment, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc, journaled

EXAMPLES = Path(__file__).parent.parent / "specs"

SMALL = """\
name: yes-no
task:
  instructions: Is it a yes?
  examples:
    - {input: yep, output: "yes"}
  output: {type: label, labels: ["yes", "no"]}
inputs:
  source: {path: inputs.txt}
teacher:
  model: m
  base_url: http://127.0.0.1:9/v1
  price_per_1m_tokens: {input: 2.0, output: 8.0}
student: {base_model: s}
"""


def test_plan_matches_a_hand_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the embedded tokenizer, an endpoint's tokens are estimated as 4 characters each.
    monkeypatch.setattr(models, "EMBEDDED", {"smollm2-135m-instruct": ("no_such_module", "x.gguf")})
    (tmp_path / "inputs.txt").write_text("sure thing\nno way at all\nabsolutely yes\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SMALL)
    result = plan(spec, out=tmp_path / "out")
    # Counted by hand, 4 characters a token (at least 1), 3 more per message, 3 to prime the answer:
    # system "Is it a yes?\n\nAnswer with exactly one of these labels and nothing else: yes, no." 80 chars -> 20 + 3
    # example "yep" -> 1 + 3, its answer "yes" -> 1 + 3, priming 3: 34 per request before the input.
    # inputs "sure thing" 10 -> 2 + 3, "no way at all" 13 -> 3 + 3, "absolutely yes" 14 -> 4 + 3.
    assert result.teacher is not None
    assert result.teacher.requests == 3
    assert result.teacher.input_tokens == 3 * 34 + 5 + 6 + 7 == 120
    assert result.teacher.output_tokens == 3 * 2  # "yes" (1 token by the 4-char rule) + end
    assert result.teacher.usd == pytest.approx((120 * 2.0 + 6 * 8.0) / 1e6)
    assert result.teacher.tokenizer == "4 characters per token"
    text = render(result)
    assert "teacher: 3 requests to send to m" in text
    assert "tokens:  ~120 input + ~6 output" in text
    assert "label     to run  not built before" in text


def test_plan_prices_many_requests_from_a_sample_within_its_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "EMBEDDED", {"smollm2-135m-instruct": ("no_such_module", "x.gguf")})
    monkeypatch.setattr(cost, "SAMPLE", 200)
    rng = random.Random(7)
    words = [f"{w}{i}" for i, w in enumerate(["ok", "fine", "never", "absolutely", "maybe"] * 40)]
    texts = {" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(2_000)}
    texts.add("yes please, send the parcel over to my new address by friday")
    texts.add("yes please, send the parcel over to my new address by monday")  # near duplicates: both priced
    (tmp_path / "inputs.txt").write_text("\n".join(texts) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SMALL)
    result = plan(spec, out=tmp_path / "out")
    assert result.teacher is not None
    exact = sum(34 + max(1, round(len(t) / 4)) + 3 for t in texts)  # the hand count of the test above
    assert result.teacher.requests == len(texts)
    assert result.teacher.sampled == 200
    assert 0 < result.teacher.input_margin < 0.05 * exact
    assert abs(result.teacher.input_tokens - exact) <= result.teacher.input_margin
    text = render(result)
    assert f"on 200 of {len(texts):,} requests, ±" in text
    assert "near duplicates not yet dropped" in text


def test_plan_and_build_refuse_over_budget_before_sending(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(20))
        set_teacher(spec, price_per_1m_tokens={"input": 1000})
        edit_spec(spec, {"budget.max_usd": 0.01})
        result = distillc("plan", str(spec), "--out", str(tmp_path / "out"))
        assert result.returncode == 1
        assert "OVER BUDGET" in result.stdout
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "out")
        assert caught.value.code == "E502"
        assert "nothing was sent" in caught.value.message
        assert teacher.requests == 0


def test_the_budget_holds_across_runs_against_a_teacher_billing_far_over_the_estimate(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The endpoint bills 10,000 prompt tokens a request at $10 per 1M, $0.10 each: about 150 times what
    its prompts show. Three runs under a $0.35 cap spend $0.30 in all (the first answer shows how the
    endpoint bills, before more go out), then the cap E503 suggests finishes the build."""
    texts = review_texts(20)
    out = tmp_path / "out"
    with FakeTeacher(sentiment, prompt_tokens=10_000) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        set_teacher(spec, max_concurrency=4, price_per_1m_tokens={"input": 10})
        edit_spec(spec, {"budget.max_usd": 0.35})
        errors = []
        for _ in range(3):
            with pytest.raises(DistillcError) as caught:
                api.build(spec, out=out, until="label")
            errors.append(caught.value)
            assert sum(e.get("usd", 0.0) for e in journaled(out)) <= 0.35
        assert teacher.requests == 3  # $0.30: one alone, then two; a fourth would cross the cap
        assert [e.code for e in errors] == ["E503"] * 3
        assert "17 of 20 teacher requests were not sent; $0.3000 spent in all" in errors[0].message
        assert "17 of 17 teacher requests were not sent; $0.3000 spent in all" in errors[2].message
        suggested = float(re.search(r"budget.max_usd: ([0-9.]+) covers them", errors[2].help).group(1))
        assert 0.30 + 17 * 0.10 <= suggested < 0.30 + 17 * 0.15
        edit_spec(spec, {"budget.max_usd": suggested})
        result = api.build(spec, out=out, until="label")
        assert teacher.requests == len(texts)  # only the unsent ones went out
    assert result.stage("label").summary["usd"] == pytest.approx(len(texts) * 0.1, rel=0.05)
    spent = sum(e.get("usd", 0.0) for e in journaled(out))
    assert spent == pytest.approx(2.0) and spent <= suggested


def test_plan_beside_a_running_build_changes_nothing_and_says_a_build_is_running(
    tmp_path: Path, tiny_model: Path
) -> None:
    """A real build labels through a slow teacher while `plan` runs on the same folder: plan takes no
    lock, reads the answers committed so far without blocking the build's commits, and says a build holds
    the folder; the build then finishes with every answer journaled."""
    import threading
    import time

    texts = review_texts(16)
    with FakeTeacher(sentiment, delay_s=1.0) as teacher:  # 16 s of labeling: plan runs well within it
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        set_teacher(spec, max_concurrency=1)
        out = tmp_path / "out"
        failures: list[BaseException] = []

        def build() -> None:
            try:
                api.build(spec, out=out, until="label")
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)

        builder = threading.Thread(target=build)
        builder.start()
        deadline = time.monotonic() + 60
        while not (journal_path(out).exists() and len(journaled(out)) >= 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        result = plan(spec, out=out)
        assert any("a build is running" in note and "pid" in note for note in result.notes)
        assert result.journaled >= 2 and result.teacher is not None
        assert result.journaled + result.teacher.requests == len(texts)
        builder.join(timeout=120)
    assert not failures, failures
    assert len(journaled(out)) == len(texts)


def test_plan_never_truncates_an_answer_a_build_is_writing(tmp_path: Path) -> None:
    """A journal of the older JSONL form, whose last line a build may still be writing: plan reads around
    it and leaves the file as it is, where migrating it (or opening it for writing) would change it."""
    from distillc.build.lock import build_lock
    from distillc.teacher.journal import journal_path

    (tmp_path / "inputs.txt").write_text("sure thing\nno way at all\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SMALL)
    out = tmp_path / "out"
    journal = journal_path(out).with_name("teacher.jsonl")
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b'{"key": "k1", "text": "yes", "usage": {}}\n{"key": "k2", "te')
    before = journal.read_bytes()
    with build_lock(out):  # as a running build holds it
        result = plan(spec, out=out)
    assert journal.read_bytes() == before and not journal_path(out).exists()
    assert any("a build is running" in note for note in result.notes)
    assert not (out / "cache").exists()  # the inputs stage ran in a scratch folder, not in the build's cache


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_plans_with_its_inputs_shipped(path: Path, tmp_path: Path) -> None:
    """The runnable examples and their production siblings: inputs in the repository (origin and license in
    specs/data/README.md), and a plan that counts the teacher requests to send."""
    spec = yaml.safe_load(path.read_text())
    sources = spec["inputs"].get("sources") or [spec["inputs"]["source"]]
    documented = (EXAMPLES / "data" / "README.md").read_text()
    for source in [*sources, *([spec["inputs"]["gold"]] if "gold" in spec["inputs"] else [])]:
        data = EXAMPLES / source["path"]
        assert len(data.read_text().splitlines()) >= 100 and f"`{data.name}`" in documented
    rows = (EXAMPLES / sources[-1]["path"]).read_text().splitlines()  # the bare inputs: the others repeat them
    result = distillc("plan", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    expected = min(len(rows), sources[-1].get("limit") or len(rows))
    sent = int(re.search(r"teacher: (\d+) requests to send", result.stdout).group(1))
    imported = re.search(r"(\d+) answered by the answers imported", result.stdout)
    sent += int(imported.group(1)) if imported else 0
    assert 0.98 * expected <= sent <= expected  # a few near duplicates may go (inputs.dedup: near)
