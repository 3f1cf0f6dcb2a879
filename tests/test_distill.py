"""Soft-label distillation: the branch points of an answer, the KD loss, and a student that learns it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distillc import api
from distillc.student.distill import Branch, branches, kd_sum
from distillc.student.examples import IGNORE, encode, with_soft_label
from distillc.student.models import load_causal_lm
from distillc.student.prompt import answer_ids, load_prompt, prompt_ids
from tests.conftest import review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

SEQUENCES = {"billing": [5, 6, 9], "bill dispute": [5, 7, 9], "shipping": [8, 9]}


def test_branch_points_follow_the_answer_down_the_label_trie() -> None:
    soft = {"billing": 0.5, "bill dispute": 0.3, "shipping": 0.2}
    # The answer's first token (row position 10) is chosen by the logits at position 9: billing and
    # bill dispute share token 5 there (0.8), shipping starts with 8 (0.2). After 5, 6 (0.5 of the 0.8) vs 7.
    assert branches(SEQUENCES, "billing", soft, answer_start=10) == [
        Branch(9, (5, 8), (pytest.approx(0.8), pytest.approx(0.2)), pytest.approx(1.0)),
        Branch(10, (6, 7), (pytest.approx(0.625), pytest.approx(0.375)), pytest.approx(0.8)),
    ]
    assert branches(SEQUENCES, "shipping", soft, answer_start=3) == [
        Branch(2, (5, 8), (pytest.approx(0.8), pytest.approx(0.2)), pytest.approx(1.0))
    ]


def test_the_loss_mask_and_branch_points_sit_on_the_answer_token_by_token(tiny_model: Path) -> None:
    _, tokenizer = load_causal_lm(str(tiny_model))
    prompt = {"prompt_prefix": "<|user|>", "prompt_suffix": "</s><|assistant|>"}
    ids = prompt_ids(tokenizer, prompt, "the kettle was lovely")
    sequences = {label: answer_ids(tokenizer, label) for label in ("positive", "negative")}
    example = encode(tokenizer, ids, "negative", max_len=64)
    answer = sequences["negative"]
    assert example.ids == ids + answer and answer[-1] == tokenizer.eos_token_id
    assert example.labels == [IGNORE] * len(ids) + answer  # loss on the answer and its end, nothing else
    soft = with_soft_label(example, sequences, {"output": "negative", "soft": {"positive": 0.3, "negative": 0.7}})
    first = len(ids) - 1  # the logits of the prompt's last token choose the answer's first
    branch = soft.branches[0]
    assert branch.position == first and sorted(branch.tokens) == sorted({s[0] for s in sequences.values()})
    assert dict(zip(branch.tokens, branch.probs, strict=True))[answer[0]] == pytest.approx(0.7)
    assert with_soft_label(example, sequences, {"output": "negative"}).branches == []


def test_kd_loss_equals_a_hand_computation_on_a_tiny_model(tiny_model: Path) -> None:
    import torch

    model, tokenizer = load_causal_lm(str(tiny_model))
    ids = tokenizer("the kettle was lovely", add_special_tokens=False)["input_ids"]
    tokens = (ids[0], ids[1], ids[2])
    rows = [
        [Branch(2, tokens, (0.6, 0.3, 0.1), 1.0), Branch(3, tokens[:2], (0.5, 0.5), 0.4)],
        [],  # a row without a distribution adds nothing
        [Branch(1, tokens[:2], (1.0, 0.0), 1.0)],
    ]
    batch = torch.tensor([ids[:6], ids[:6], ids[:6]])
    with torch.no_grad():
        logits = model(input_ids=batch).logits

    def kl(row: int, branch: Branch) -> float:
        chosen = [float(logits[row, branch.position, t]) for t in branch.tokens]
        top = max(chosen)
        log_z = top + math.log(sum(math.exp(x - top) for x in chosen))
        return sum(q * (math.log(q) - (x - log_z)) for q, x in zip(branch.probs, chosen, strict=True) if q > 0)

    pairs = [(logits[row, b.position], b) for row, branches_ in enumerate(rows) for b in branches_]
    expected = (kl(0, rows[0][0]) + 0.4 * kl(0, rows[0][1])) + kl(2, rows[2][0])
    assert float(kd_sum(pairs)) == pytest.approx(expected, rel=1e-5)
    assert float(kd_sum([])) == 0.0


def student_probability(model_dir: Path, text: str, label: str, other: str) -> float:
    """The trained student's probability of `label` against `other` at the answer's first token."""
    import torch

    model, tokenizer = load_causal_lm(str(model_dir))
    ids = prompt_ids(tokenizer, load_prompt(model_dir), text)
    first = {name: answer_ids(tokenizer, name)[0] for name in (label, other)}
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    pair = torch.softmax(torch.stack([logits[first[label]], logits[first[other]]]), dim=0)
    return float(pair[0])


def test_a_student_trained_on_soft_labels_learns_the_teachers_doubt(tmp_path: Path, tiny_model: Path) -> None:
    """The teacher answers every review correctly but is only 70% sure. Trained on its answers, the student
    becomes certain; trained on its distribution, it keeps the teacher's doubt."""
    texts = review_texts(48)

    def doubt(user: str) -> dict[str, float]:
        return {label: 0.7 if label == sentiment(user) else 0.3 for label in ("positive", "negative")}

    sureness = {}
    with FakeTeacher(sentiment, constrain=True, label_probs=doubt) as teacher:
        for weight in (0.0, 1.0):
            folder = tmp_path / f"w{weight}"
            changes = {
                "student.soft_label_weight": weight,
                "student.epochs": 40,
                "student.dev_share": 0,
            }
            spec = write_spec(folder, base_url=teacher.base_url, student=str(tiny_model), inputs=texts, changes=changes)
            result = api.build(spec, out=folder / "out", until="train")
            summary = result.stage("train").summary
            assert summary["soft_labels"] == (summary["examples"] if weight else 0)
            model_dir = result.stage("train").artifact / "model"
            other = {"positive": "negative", "negative": "positive"}
            probabilities = [student_probability(model_dir, t, sentiment(t), other[sentiment(t)]) for t in texts[:12]]
            sureness[weight] = sum(probabilities) / len(probabilities)
    assert sureness[0.0] > 0.8  # hard labels: heading for certainty
    assert sureness[1.0] == pytest.approx(0.7, abs=0.08)  # soft labels: the teacher's 70%
