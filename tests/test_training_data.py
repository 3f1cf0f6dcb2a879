"""Split, training targets and scoring: the data the student learns from and is judged on."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from distillc import api
from distillc.build.artifacts import read_jsonl
from distillc.errors import DistillcError
from distillc.spec.ir import TaskIR
from distillc.student.examples import IGNORE, Example, ExampleStore, encode, fit_length, with_soft_label
from distillc.student.prompt import answer_ids
from distillc.student.train_job import dev_rows
from distillc.task import task_type
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import journaled, parity_rows


def split_ids(build: Path, result: api.BuildResult) -> tuple[set[str], set[str]]:
    artifact = result.stage("split").artifact
    return (
        {r["id"] for r in read_jsonl(artifact / "train.jsonl")},
        {r["id"] for r in read_jsonl(artifact / "holdout.jsonl")},
    )


def test_split_is_disjoint_sized_and_stable_as_data_grows(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path / "a", base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(100))
        train, holdout = split_ids(tmp_path, api.build(spec, out=tmp_path / "a" / "out", until="split"))
        assert not train & holdout and len(train) + len(holdout) == 100
        assert 8 <= len(holdout) <= 22  # about 15% of 100
        grown = write_spec(
            tmp_path / "b",
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(100) + review_texts(40, seed=7),
        )
        train2, holdout2 = split_ids(tmp_path, api.build(grown, out=tmp_path / "b" / "out", until="split"))
    # An input never moves from training to held-out (or back) because other inputs were added.
    assert train <= train2 and holdout <= holdout2


class WordTokenizer:
    """Whitespace tokenizer: enough to check which tokens carry loss."""

    eos_token_id = 99

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [len(word) for word in text.split()]}


def test_loss_is_on_the_answer_and_end_of_turn_only() -> None:
    example = encode(WordTokenizer(), [2, 3, 4], "d ee", max_len=64)
    assert example.ids == [2, 3, 4, 1, 2, 99]
    assert example.labels == [IGNORE, IGNORE, IGNORE, 1, 2, 99]
    assert not example.truncated


def test_long_prompts_lose_their_start_not_the_answer() -> None:
    example = encode(WordTokenizer(), [1, 2, 3, 4, 5], "ff", max_len=4)
    assert example.truncated
    assert example.ids == [4, 5, 2, 99]
    assert example.labels == [IGNORE, IGNORE, 2, 99]


def agrees(task: TaskIR, expected: str, predicted: str) -> bool:
    return task_type(task).agrees(task, expected, predicted)


def test_agreement_rules_per_output_type() -> None:
    label = TaskIR("", (), "label", ("positive", "negative"), "")
    assert agrees(label, "positive", "Positive.")
    assert not agrees(label, "positive", "positive or negative")
    json_task = TaskIR("", (), "json", (), "")
    assert agrees(json_task, '{"a":1,"b":[2]}', '{"b": [2], "a": 1}')
    assert not agrees(json_task, '{"a":1}', "{a: 1}")
    text = TaskIR("", (), "text", (), "")
    assert agrees(text, "Hello world", " Hello world\n")
    assert not agrees(text, "Hello world", "hello world")


def test_local_teacher_generates_for_text_tasks(tmp_path: Path, tiny_model: Path) -> None:
    """Generation path of the local teacher: every answer journaled, then judged by the output contract.

    The random-init model answers with special tokens only, which decode to nothing: every answer is
    rejected as empty, re-asked once (the same output contract as an endpoint's), and still empty: the stage
    fails with the answer in its message, and nothing is asked again on a re-run.
    """
    texts = review_texts(12)
    spec = write_spec(tmp_path, base_url="", student=str(tiny_model), inputs=texts)
    edit_spec(
        spec,
        {"task.output": {"type": "text"}, "teacher": {"provider": "local", "model": str(tiny_model), "max_tokens": 6}},
    )
    with pytest.raises(DistillcError) as caught:
        api.build(spec, out=tmp_path / "out", until="label")
    assert caught.value.code == "E403"
    assert "(first: '': empty answer (after one re-ask))" in caught.value.message
    answers = journaled(tmp_path / "out")
    assert len(answers) == 2 * len(texts)  # each first answer, and its re-ask
    assert all(e["usage"]["completion_tokens"] == 6 for e in answers)
    with pytest.raises(DistillcError):
        api.build(spec, out=tmp_path / "out", until="label")
    assert journaled(tmp_path / "out") == answers  # no answer was generated (and journaled) a second time


def test_lora_trains_adapters_exports_and_keeps_parity(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60))
        edit_spec(spec, {"student.method": "lora", "student.lora": {"r": 4, "alpha": 8}})
        result = api.build(spec, out=tmp_path / "out", until="export")
    train = result.stage("train").summary
    assert train["method"] == "lora"
    assert train["layers"] == {"kept": [0, 1], "of": 2}
    assert 0 < train["trainable_parameters"] < 20_000  # adapters only: the tiny model has ~60k weights
    export = result.stage("export").summary
    assert export["layers"] == 2
    parity = parity_rows(result.build_dir)
    assert len(parity) == export["parity_checked"] > 0 and all(r["torch"] == r["onnx"] for r in parity)


def test_a_tiny_data_set_still_gets_both_sides_and_three_rows_get_e303(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path / "a", base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(5))
        edit_spec(spec, {"evaluation.holdout": 0.01})  # by hash, all five would train
        train, holdout = split_ids(tmp_path, api.build(spec, out=tmp_path / "a" / "out", until="split"))
        assert len(holdout) == 1 and len(train) == 4 and not train & holdout
        spec = write_spec(tmp_path / "b", base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(3))
        with pytest.raises(DistillcError) as caught:
            api.build(spec, out=tmp_path / "b" / "out", until="split")
    assert caught.value.code == "E303" and "only 3 labeled examples" in caught.value.message


def test_training_rows_stream_into_a_file_and_read_back_as_the_in_memory_examples(tmp_path: Path) -> None:
    """The example store gives exactly what cutting and soft-labeling each row in memory gives, while what it
    keeps in memory per row is a few bytes, not the row's tokens."""
    tokenizer = WordTokenizer()
    sequences = {label: answer_ids(tokenizer, label) for label in ("aa b", "aa ccc", "dddd")}
    rng = random.Random(3)
    rows = []
    for i in range(300):
        output = rng.choice(list(sequences))
        row = {"id": str(i), "input": " ".join("w" * rng.randint(1, 9) for _ in range(rng.randint(0, 12)))}
        row["output"] = output
        if i % 3:
            row["soft"] = {"aa b": 0.6, "aa ccc": 0.3, "dddd": 0.1}
        rows.append(row)

    def encoded(row: dict[str, Any]) -> Example:
        return encode(tokenizer, tokenizer(row["input"])["input_ids"], row["output"])

    store = ExampleStore(tmp_path)
    dev = dev_rows(rows, 0.1, store, encoded)
    assert 0 < len(dev) < 60 and len(store) + len(dev) == len(rows)
    train_rows = [r for r in rows if r not in dev]
    assert list(store.needed) == [encoded(r).needed for r in train_rows]
    store.fitted(8, sequences)
    expected = [with_soft_label(fit_length(encoded(r), 8), sequences, r) for r in train_rows]
    assert list(store) == expected
    assert store.lengths() == [len(e.ids) for e in expected]  # known without reading a row
    assert store[-1] == expected[-1] and store[5:9] == expected[5:9]
    assert sum(e.truncated for e in store) > 0 and sum(bool(e.branches) for e in store) > 0
    store.close()

    (tmp_path / "many").mkdir()
    many = ExampleStore(tmp_path / "many")
    example = encoded({"input": "w " * 60, "output": "dddd"})
    tracemalloc.start()
    for _ in range(20_000):
        many.add(example, {"output": "dddd", "soft": {"dddd": 0.9, "aa b": 0.1}})
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 20 bytes a row of offsets and length (and the arrays' spare room): a row's tokens and targets, 512 bytes,
    # and its soft label went to files.
    assert held < 20_000 * 32
    mapped = rss_file_kb()
    assert all(e == example for e in many.fitted(0, {}))  # 10 MB of rows read back, none of it kept mapped
    assert rss_file_kb() - mapped < 2048
    many.close()


def rss_file_kb() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["RssFile"].split()[0])


def test_the_dev_slice_is_capped_at_the_rows_of_lowest_hash_and_the_rest_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillc.data.split import unit_hash
    from distillc.student import train_job

    monkeypatch.setattr(train_job, "MAX_DEV_ROWS", 10)
    rows = [{"id": str(i), "input": f"w{i}", "output": "a"} for i in range(400)]
    store = ExampleStore(tmp_path)
    dev = dev_rows(rows, 0.2, store, lambda r: encode(WordTokenizer(), [int(r["id"])], r["output"]))
    by_hash = sorted(rows, key=lambda r: unit_hash(f"dev:{r['id']}"))
    assert len(dev) == 10 and {r["id"] for r in dev} == {r["id"] for r in by_hash[:10]}  # ~80 drew dev
    assert [int(r["id"]) for r in dev] == sorted(int(r["id"]) for r in dev)  # in the rows' order
    assert len(store) == 390  # every other row trains
    trained = {e.ids[0] for e in store.fitted(0, {})}
    assert trained == set(range(400)) - {int(r["id"]) for r in dev}
    store.close()


def test_rows_that_all_fall_to_the_dev_slice_all_train_instead(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path)
    rows = [{"id": str(i), "input": "w", "output": "a"} for i in range(3)]
    assert dev_rows(rows, 1.0, store, lambda r: encode(WordTokenizer(), [1], r["output"])) == []
    assert len(store) == 3
    store.close()
