"""The held-out set has no near-copy in training: near duplicates are grouped, and a group falls on one side."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from distillc import api
from distillc.build.artifacts import read_jsonl
from distillc.data.dedup import THRESHOLD, jaccard, shingles
from tests.conftest import sentiment, write_spec
from tests.fake_teacher import FakeTeacher

TEMPLATES = [
    "my order #{n} has not arrived and the tracking page shows nothing since monday",
    "the invoice {n} charges me twice for the same plan, please refund one of them",
    "app version 4.{n} crashes as soon as i open the camera screen on my phone",
    "i was promised a call back about ticket {n} but nobody ever called me",
    "the parcel {n} arrived broken, the box was crushed and the lid is cracked",
    "please change the delivery address of order {n} to my office instead",
]


def traffic(seed: int = 0) -> list[str]:
    """Production-like traffic: each template many times with another number, and unrelated one-offs."""
    rng = random.Random(seed)
    rows = [t.format(n=rng.randrange(10_000, 99_999)) for t in TEMPLATES for _ in range(12)]
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows += [" ".join("".join(rng.choices(letters, k=6)) for _ in range(7)) for _ in range(60)]  # unrelated
    rng.shuffle(rows)
    return rows


def test_no_near_duplicate_pair_straddles_the_split(tmp_path: Path) -> None:
    texts = traffic()
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=texts)  # dedup: exact
        result = api.build(spec, out=tmp_path / "out", until="split")
    split = result.stage("split")
    train = {r["input"] for r in read_jsonl(split.artifact / "train.jsonl")}
    holdout = {r["input"] for r in read_jsonl(split.artifact / "holdout.jsonl")}
    assert train | holdout == set(texts) and not train & holdout
    grams = {t: shingles(t) for t in texts}
    pairs = [(a, b) for a, b in itertools.combinations(texts, 2) if jaccard(grams[a], grams[b]) >= THRESHOLD]
    assert len(pairs) > 300  # the fixture is full of near duplicates
    straddling = [(a, b) for a, b in pairs if (a in holdout) != (b in holdout)]
    assert straddling == []
    summary = split.summary
    assert summary["groups"] == len(TEMPLATES) and summary["largest_group"] == 12
    assert summary["grouped_inputs"] == 12 * len(TEMPLATES)
    assert summary["leaked"] == 0
    # Split by each input's own hash, as before, about 15% of every group would be held out beside the rest.
    assert summary["leaked_by_own_hash"] >= 5
    assert 0 < summary["holdout"] < len(texts) / 2


def test_inputs_without_near_duplicates_keep_the_side_of_their_own_hash(tmp_path: Path) -> None:
    """Grouping moves only grouped inputs: the rest split as they always have, so scores stay comparable."""
    from distillc.data.sources import input_id
    from distillc.data.split import unit_hash

    texts = traffic(seed=3)
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student="unused", inputs=texts)
        result = api.build(spec, out=tmp_path / "out", until="split")
    holdout = {r["input"] for r in read_jsonl(result.stage("split").artifact / "holdout.jsonl")}
    loners = [t for t in texts if not any(t.startswith(x.split("{")[0]) for x in TEMPLATES)]
    assert len(loners) == 60
    assert {t for t in loners if unit_hash(input_id(t)) < 0.15} == {t for t in loners if t in holdout}
