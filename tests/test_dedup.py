"""Near-duplicate filtering in linear time: as good as comparing every pair exactly, for files and generated
inputs alike, with what it dropped in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distillc import api
from distillc.build.artifacts import read_jsonl
from distillc.data.dedup import THRESHOLD, NearDuplicateIndex, band_keys, jaccard, near_duplicates, shingles, signatures
from distillc.data.diversity import Diversity
from tests.conftest import edit_spec, write_spec
from tests.planted import planted


def exact_jaccard_drops(texts: list[str]) -> set[int]:
    """The quadratic way: each text against every text kept before it, on exact shingle sets."""
    grams = [shingles(t) for t in texts]
    kept: list[int] = []
    dropped = set()
    for row, mine in enumerate(grams):
        if any(jaccard(mine, grams[k]) >= THRESHOLD for k in kept):
            dropped.add(row)
        else:
            kept.append(row)
    return dropped


def test_minhash_lsh_finds_the_planted_near_duplicates_exact_jaccard_finds() -> None:
    """1,000 sentences and 200 edited copies, some edited past the threshold: banded MinHash drops at least
    every copy the exact all-pairs comparison drops, and no original."""
    texts, pairs = planted(1_000, 200, seed=3)
    copies = {copy for _, copy in pairs}
    exact = exact_jaccard_drops(texts)
    sigs = signatures(texts)
    found = near_duplicates(sigs, band_keys(sigs), texts.__getitem__)
    lsh = set(found.dropped.tolist())
    index = NearDuplicateIndex()
    incremental = set()
    for row, text in enumerate(texts):
        if index.check(text):
            incremental.add(row)
        else:
            index.add(text)

    def recall(dropped: set[int]) -> float:
        return len(dropped & copies) / len(copies)

    assert 0.8 < recall(exact) < 1.0  # the fixture has copies below the threshold, and most above
    assert recall(lsh) >= recall(exact) and recall(incremental) >= recall(exact)
    assert not (lsh - copies) and not (incremental - copies)  # no original is dropped
    for row, like, sim in zip(found.dropped, found.like, found.similarity, strict=True):
        assert like < row and sim == pytest.approx(jaccard(shingles(texts[row]), shingles(texts[like])))


def test_no_candidates_and_no_texts_are_handled() -> None:
    assert len(near_duplicates(signatures([]), band_keys(signatures([])), str).dropped) == 0
    sigs = signatures(["one text alone", "quite another sentence here"])
    assert len(near_duplicates(sigs, band_keys(sigs), str).dropped) == 0


def _file_build(tmp_path: Path, rows: list[str], **inputs: object) -> tuple[dict, list[str]]:
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="unused", inputs=rows)
    if inputs:
        edit_spec(spec, {f"inputs.{k}" if k == "dedup" else f"inputs.source.{k}": v for k, v in inputs.items()})
    result = api.build(spec, out=tmp_path / "out", until="inputs")
    record = result.stage("inputs")
    return record.summary, [r["input"] for r in read_jsonl(record.artifact / "inputs.jsonl")]


def test_an_input_file_loses_its_near_duplicates_and_the_report_shows_them(tmp_path: Path) -> None:
    texts, _ = planted(300, 60, seed=5)
    rows = [*texts, texts[0].upper(), texts[1] + " !!"]  # two exact repeats, once normalized
    summary, kept = _file_build(tmp_path, rows, dedup="near")
    expected = near_duplicates(signatures(texts), band_keys(signatures(texts)), texts.__getitem__)
    assert summary["duplicates"] == 2 and summary["near_duplicates"] == len(expected.dropped) > 40
    assert kept == [t for i, t in enumerate(texts) if i not in set(expected.dropped.tolist())]
    example = summary["near_duplicate_examples"][0]
    first, like = int(expected.dropped[0]), int(expected.like[0])
    assert (example["input"], example["like"]) == (texts[first][:200], texts[like][:200])  # cut at 200 characters
    assert example["similarity"] >= THRESHOLD
    assert summary["diversity_sample"] == len(kept) and summary["dedup"] == "near"


def test_dedup_exact_keeps_near_duplicates_and_off_keeps_every_row(tmp_path: Path) -> None:
    texts, _ = planted(100, 20, seed=6)
    rows = [*texts, texts[0]]
    summary, kept = _file_build(tmp_path / "exact", rows, dedup="exact")
    assert summary["duplicates"] == 1 and summary["near_duplicates"] == 0 and kept == texts
    summary, kept = _file_build(tmp_path / "off", rows, dedup="off")
    assert summary["duplicates"] == 0 and kept == rows


def test_a_limit_counts_inputs_kept_after_near_duplicates_are_dropped(tmp_path: Path) -> None:
    """The first 100 rows hold 30 near duplicates: reading goes on until 100 distinct inputs are kept."""
    texts, _ = planted(70, 30, seed=8)
    rng = np.random.default_rng(0)
    rows = [texts[i] for i in rng.permutation(100)] + planted(200, 0, seed=9)[0]
    summary, kept = _file_build(tmp_path, rows, limit=100, dedup="near")
    assert len(kept) == 100 and summary["near_duplicates"] >= 20
    assert kept == [t for t in rows if t in set(kept)][:100]  # in file order


def test_diversity_is_measured_on_a_fixed_sample() -> None:
    texts, _ = planted(25_000, 0, seed=1)
    first, second = Diversity(), Diversity()
    for text in texts:
        first.add(text)
        second.add(text)
    summary = first.summary()
    assert summary == second.summary() and summary["diversity_sample"] == 10_000
    assert summary["mean_words"] == pytest.approx(np.mean([len(t.split()) for t in texts]), abs=0.05)
    assert json.dumps(summary)


def test_near_is_the_default_and_the_generation_index_follows_the_mode(tmp_path: Path) -> None:
    from distillc.spec import load_spec

    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="unused", inputs=["a b c"])
    data = spec.read_text().replace("  dedup: exact\n", "")
    spec.write_text(data)
    assert "dedup" not in data and load_spec(spec).inputs.dedup == "near"
    text, close = "The battery died after two days of light use.", "The battery died after 2 days of light use."
    for mode, expected in (("near", ("duplicate", "near-duplicate")), ("exact", ("duplicate", "")), ("off", ("", ""))):
        index = NearDuplicateIndex(mode)
        index.add(text)
        assert (index.check(text.upper()), index.check(close)) == expected, mode


def test_signatures_from_worker_processes_come_back_in_order(tmp_path: Path) -> None:
    """Past the first chunk, texts are signed in other processes: the store holds what signing them here
    gives, row for row."""
    from distillc.data.dedup import TextStore

    texts, _ = planted(450, 50, seed=12)
    store = TextStore(tmp_path, signed=True)
    assert store.extend(texts, chunk=64) == 500
    sigs, keys = store.arrays()
    assert np.array_equal(sigs, signatures(texts)) and np.array_equal(keys, band_keys(signatures(texts)))
    assert [store.text(i) for i in (0, 77, 499)] == [texts[0], texts[77], texts[499]]
    store.close()
