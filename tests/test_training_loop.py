"""The training loop: data order, packing, accumulation, early stopping, resume after a kill, and two
processes (DDP over gloo) against one."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from distillc import api
from distillc.student.examples import Example, encode
from distillc.student.models import load_causal_lm
from distillc.student.trainer import (
    Schedule,
    answer_tokens,
    dev_loss,
    epoch_batches,
    fit,
    micro_loss,
    padded_tokens,
)
from tests.conftest import review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher

ROOT = Path(__file__).resolve().parents[1]


def schedule(**changes: Any) -> Schedule:
    base = dict(
        epochs=2,
        batch_size=8,
        grad_accumulation=1,
        learning_rate=3e-3,
        seed=0,
        soft_label_weight=0.0,
        packing=True,
        checkpoint_every=0,
        patience=0,
    )
    return Schedule(**{**base, **changes})


def examples(tokenizer: Any, texts: list[str]) -> list[Example]:
    return [
        encode(tokenizer, tokenizer(t, add_special_tokens=False)["input_ids"], sentiment(t), max_len=64) for t in texts
    ]


def weights(model: Any) -> dict[str, Any]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_weights(a: dict[str, Any], b: dict[str, Any], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"weights differ by up to {worst}"


def flat(pairs: list[list[float]]) -> list[float]:
    return [x for pair in pairs for x in pair]


def test_each_epochs_batches_come_from_the_seed_and_epoch_alone() -> None:
    first = epoch_batches(400, 8, seed=0, epoch=0)
    assert first == epoch_batches(400, 8, seed=0, epoch=0)
    assert first != epoch_batches(400, 8, seed=0, epoch=1)
    assert first != epoch_batches(400, 8, seed=1, epoch=0)
    assert sorted(i for batch in first for i in batch) == list(range(400))  # every row once, none twice
    assert {len(batch) for batch in first} == {8}


def test_a_packed_batch_gives_the_padded_batchs_loss_and_gradient(tiny_model: Path) -> None:
    """Rows end to end in one sequence attend only within themselves: loss and gradient are the padded
    batch's, and so are the soft-label terms."""
    import torch

    from distillc.student.distill import Branch

    model, tokenizer = load_causal_lm(str(tiny_model))
    texts = review_texts(6)
    rows = examples(tokenizer, texts)
    first = [next(p for p, label in enumerate(e.labels) if label != -100) - 1 for e in rows]
    rows[1] = replace(rows[1], branches=[Branch(first[1], (5, 9, 11), (0.5, 0.3, 0.2), 1.0)])
    assert len({len(e.ids) for e in rows}) > 1  # lengths differ: the padded batch has padding
    results = {}
    for packed in (True, False):
        model.zero_grad()
        plan = schedule(soft_label_weight=0.5, packing=packed)
        loss = micro_loss(model, rows, 0, "cpu", (sum(map(answer_tokens, rows)), 1), plan)
        loss.backward()
        results[packed] = (float(loss.detach()), torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
    assert torch.allclose(results[True][1], results[False][1], atol=1e-6)
    # Without the row boundaries (one long sequence), later rows would see earlier ones: a different loss.
    model.zero_grad()
    glued = [Example([t for e in rows for t in e.ids], [x for e in rows for x in e.labels], False)]
    norm = (sum(map(answer_tokens, rows)), 0)
    assert float(micro_loss(model, glued, 0, "cpu", norm, schedule())) != pytest.approx(
        float(micro_loss(model, rows, 0, "cpu", norm, schedule())), rel=1e-4
    )


def test_logits_distillation_is_the_kl_from_the_teachers_answer_token_distributions(tiny_model: Path) -> None:
    """With a teacher model, the loss is (1 - w) * cross-entropy + w * KL(teacher || student), both over the
    answer tokens, computed here by hand from each model's own forward pass, row by row."""
    import torch

    student, tokenizer = load_causal_lm(str(tiny_model))
    teacher, _ = load_causal_lm(str(tiny_model))
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # a different model: the KL is not zero
    rows = examples(tokenizer, review_texts(4))
    tokens = sum(map(answer_tokens, rows))
    ce, kl = 0.0, 0.0
    with torch.no_grad():
        for e in rows:
            s_logits = student(input_ids=torch.tensor([e.ids])).logits[0]
            t_logits = teacher(input_ids=torch.tensor([e.ids])).logits[0]
            for p in range(1, len(e.labels)):
                if e.labels[p] == -100:
                    continue
                s_log, t_log = s_logits[p - 1].log_softmax(-1), t_logits[p - 1].log_softmax(-1)
                ce -= float(s_log[e.labels[p]])
                kl += float((t_log.exp() * (t_log - s_log)).sum())
    assert kl > 1e-4
    for packed in (True, False):
        plan = schedule(kd_weight=0.7, packing=packed)
        got = float(micro_loss(student, rows, 0, "cpu", (tokens, 0), plan, teacher))
        assert got == pytest.approx((0.3 * ce + 0.7 * kl) / tokens, rel=1e-4)
    # Without a teacher, kd_weight has nothing to distill: the answer's cross-entropy alone.
    alone = float(micro_loss(student, rows, 0, "cpu", (tokens, 0), schedule(kd_weight=0.7)))
    assert alone == pytest.approx(ce / tokens, rel=1e-4)


def test_packing_cuts_the_padding_of_real_batches() -> None:
    lengths = [5 + (i * 37) % 60 for i in range(400)]
    real, padded = padded_tokens(epoch_batches(400, 8, seed=0, epoch=0), lengths)
    assert padded > 1.3 * real  # what a padded batch computes in vain, and a packed one does not


def test_gradient_accumulation_gives_the_large_batch(tiny_model: Path) -> None:
    trained = {}
    for batch, accumulate in ((8, 1), (4, 2), (2, 4)):
        model, tokenizer = load_causal_lm(str(tiny_model))
        rows = examples(tokenizer, review_texts(32))
        fit(model, rows, [], schedule(batch_size=batch, grad_accumulation=accumulate), 0, None, lambda m: None)
        trained[(batch, accumulate)] = weights(model)
    original = weights(load_causal_lm(str(tiny_model))[0])
    assert max(float((trained[(8, 1)][k] - original[k]).abs().max()) for k in original) > 1e-3  # it trained
    assert_same_weights(trained[(8, 1)], trained[(4, 2)])
    assert_same_weights(trained[(8, 1)], trained[(2, 4)])


def test_early_stopping_keeps_the_weights_with_the_best_dev_loss(tiny_model: Path) -> None:
    model, tokenizer = load_causal_lm(str(tiny_model))
    texts = review_texts(60)
    train, dev = examples(tokenizer, texts[:40]), examples(tokenizer, texts[40:])
    # A learning rate high enough to overfit 40 rows: dev loss turns up, and training stops.
    plan = schedule(epochs=40, learning_rate=2e-2, checkpoint_every=5, patience=2, batch_size=8)
    logged: list[str] = []
    progress = fit(model, train, dev, plan, 0, None, logged.append)
    losses = dict(progress.dev_losses)
    assert progress.stopped_early and progress.step < 40 * 5
    assert progress.best_step == min(losses, key=losses.get)
    assert progress.best_step < progress.step  # later weights were worse, and were not kept
    import torch

    again = dev_loss(model, dev, 0, "cpu", plan, torch.autocast("cpu", enabled=False))
    assert again == pytest.approx(losses[progress.best_step], rel=1e-4)


KILL_AFTER_CHECKPOINT = """
import os, sys
from pathlib import Path
from distillc import api
from distillc.student import trainer

saved = trainer.save_atomic
def save_then_die(obj, path):
    saved(obj, path)
    if path.name == trainer.STATE_FILE and obj["progress"]["step"] >= {step}:
        os._exit(9)  # killed right after the checkpoint at this step, as by SIGKILL
trainer.save_atomic = save_then_die
api.build(Path(sys.argv[1]), out=Path(sys.argv[2]), until="train")
"""


def train_summary(result: api.BuildResult) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    stage = result.stage("train")
    return stage.summary, load_file(stage.artifact / "model" / "model.safetensors")


def test_a_build_killed_mid_training_resumes_and_ends_as_an_uninterrupted_one(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(60)
    changes = {"student.epochs": 3, "student.checkpoint_every": 4, "student.dev_share": 0.15}
    with FakeTeacher(sentiment) as teacher:
        whole = write_spec(
            tmp_path / "whole", base_url=teacher.base_url, student=str(tiny_model), inputs=texts, changes=changes
        )
        reference, reference_weights = train_summary(api.build(whole, out=tmp_path / "whole" / "out", until="train"))

        spec = write_spec(
            tmp_path / "killed", base_url=teacher.base_url, student=str(tiny_model), inputs=texts, changes=changes
        )
        out = tmp_path / "killed" / "out"
        script = KILL_AFTER_CHECKPOINT.replace("{step}", "8")
        killed = subprocess.run(
            [sys.executable, "-c", script, str(spec), str(out)], cwd=ROOT, capture_output=True, text=True
        )
        assert killed.returncode == 9, killed.stderr[-2000:]
        assert list((out / "checkpoints").glob("train-*/state.pt"))  # the checkpoint survived the kill
        resumed, resumed_weights = train_summary(api.build(spec, out=out, until="train"))
    assert resumed["resumed_from_step"] == 8 and reference["resumed_from_step"] == 0
    assert resumed["steps"] == reference["steps"] > 8
    assert resumed["step_loss"] == pytest.approx(reference["step_loss"], rel=1e-5)
    assert flat(resumed["dev_loss"]) == pytest.approx(flat(reference["dev_loss"]), rel=1e-5)
    assert_same_weights(reference_weights, resumed_weights)
    assert not list((out / "checkpoints").glob("train-*"))  # done: the model is the artifact, checkpoints go


def test_two_processes_over_gloo_train_as_one(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(48)
    runs = {}
    with FakeTeacher(sentiment) as teacher:
        for devices in (1, 2):
            folder = tmp_path / f"devices-{devices}"
            changes = {"student.epochs": 2, "student.devices": devices, "student.dev_share": 0.15}
            spec = write_spec(folder, base_url=teacher.base_url, student=str(tiny_model), inputs=texts, changes=changes)
            runs[devices] = train_summary(api.build(spec, out=folder / "out", until="train"))
    (one, one_weights), (two, two_weights) = runs[1], runs[2]
    assert two["devices"] == 2 and two["steps"] == one["steps"] > 4
    assert two["step_loss"] == pytest.approx(one["step_loss"], rel=1e-4, abs=1e-5)
    assert flat(two["dev_loss"]) == pytest.approx(flat(one["dev_loss"]), rel=1e-4, abs=1e-5)
    assert_same_weights(one_weights, two_weights, atol=1e-4)
    print(json.dumps({"one": one["step_loss"], "two": two["step_loss"]}))
