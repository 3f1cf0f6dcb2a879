"""`distillc gc`: what a spec change left in the cache goes; the last build, journal and package stay."""

from __future__ import annotations

import os
from pathlib import Path

from distillc import api
from distillc.build.artifacts import disk_bytes
from distillc.build.gc import freed_bytes
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc


def test_gc_removes_what_the_last_build_did_not_use_and_nothing_it_did(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "out"
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(40), epochs=2
        )
        api.build(spec, out=out, until="train")
        old_train = next((out / "cache" / "train").iterdir())
        edit_spec(spec, {"student.epochs": 3})  # a new train artifact
        api.build(spec, out=out, until="train")
        (out / "cache" / "train" / ".tmp-0123-999").mkdir()  # left by a killed build
        stale = out / "checkpoints" / "train-0123"  # so is a checkpoint it never resumed from
        stale.mkdir(parents=True)
        (stale / "state.pt").write_bytes(b"x" * 1000)
        sent = teacher.requests

        dry = distillc("gc", str(spec), "--out", str(out), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would remove cache/train/{old_train.name}" in dry.stdout and old_train.exists()

        result = distillc("gc", str(spec), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert not old_train.exists() and not (out / "cache" / "train" / ".tmp-0123-999").exists()
        assert not stale.exists()
        assert "freed" in result.stdout and "in 3 entries; kept 5" in result.stdout
        assert (out / "journal" / "teacher.sqlite").exists()
        again = api.build(spec, out=out, until="train")  # the last build is intact: nothing re-runs
        assert all(s.status == "hit" for s in again.stages) and teacher.requests == sent


def test_gc_without_a_build_says_so(tmp_path: Path, tiny_model: Path) -> None:
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student=str(tiny_model), inputs=review_texts(5))
    result = distillc("gc", str(spec), "--out", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "error[E203]" in result.stderr and "no build in" in result.stderr


def test_freed_bytes_count_a_linked_file_only_when_every_link_goes(tmp_path: Path) -> None:
    cache, package = tmp_path / "cache" / "old", tmp_path / "package"
    cache.mkdir(parents=True)
    package.mkdir()
    (cache / "weights.data").write_bytes(b"w" * 5000)
    (cache / "notes.json").write_bytes(b"n" * 300)
    os.link(cache / "weights.data", package / "weights.data")  # as the package links the shipped weights
    assert freed_bytes([cache]) == 300
    assert freed_bytes([cache, package]) == 5300
    assert disk_bytes([cache, package]) == 5300
