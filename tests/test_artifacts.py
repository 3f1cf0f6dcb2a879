"""Artifacts between stages: each written and read back through its one typed record, under its schema
version; a file of another version is refused by name, never misread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillc.artifacts import export, gate, prune, verify
from distillc.errors import DistillcError


def test_each_record_reads_back_as_written(tmp_path: Path) -> None:
    made = [prune.Candidate(name="l2", layers=2, kept=[0, 3], steps=5, final_loss=0.5, dev_loss=None,
                            tokens_per_second=12.0)]  # fmt: skip
    prune.write_candidates(tmp_path, made)
    [candidate] = prune.read_candidates(tmp_path)
    assert candidate["kept"] == [0, 3] and candidate["model"] == tmp_path / "candidates" / "l2" / "model"

    students = [export.ExportedStudent(student="full", layers=4,
                                       variants=[export.Variant(name="fp32", weights="fp32", bytes=10)])]  # fmt: skip
    export.write_exported(tmp_path, students)
    assert export.read_exported(tmp_path) == students
    assert export.variant_dir(tmp_path, export.variant_name("l2", "int8")) == tmp_path / "variants" / "l2-int8"

    verified = verify.Verified(metric="accuracy", n=3, variants=[{"name": "fp32", "score": 1.0}], target="cpu",
                               measured_with="CPU", measured_on_target=True, cpu={"level": "avx2"})  # fmt: skip
    verify.write_verified(tmp_path, verified)
    assert verify.read_verified(tmp_path) == verified

    decision = gate.Decision(variant={"name": "fp32"}, metric="accuracy", n=3, measured_with="CPUExecutionProvider")
    gate.write_decision(tmp_path, decision)
    assert gate.read_decision(tmp_path) == decision
    assert json.loads((tmp_path / gate.DECISION).read_text())["schema_version"] == gate.VERSION


@pytest.mark.parametrize("found", [2, None, "1"])
def test_an_artifact_of_another_schema_version_is_refused(tmp_path: Path, found: object) -> None:
    gate.write_decision(tmp_path, gate.Decision(variant={}, metric="accuracy", n=1, measured_with="cpu"))
    path = tmp_path / gate.DECISION
    data = json.loads(path.read_text())
    data["schema_version"] = found
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    with pytest.raises(DistillcError) as caught:
        gate.read_decision(tmp_path)
    error = caught.value
    assert error.code == "E206" and str(path) in error.message and f"version {found!r}" in error.message
    assert "--force" in (error.help or "")
