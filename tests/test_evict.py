"""The trained weights and the export variants that did not ship are freed once the package is in place, and
made again when needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillc import api
from distillc.build.artifacts import disk_bytes
from distillc.plan import plan
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc, stage_artifact


def variant_files(out: Path) -> dict[str, list[str]]:
    export = stage_artifact(out, "export")
    return {v.name: sorted(f.name for f in v.iterdir()) for v in sorted((export / "variants").iterdir())}


@pytest.fixture
def built(tmp_path: Path, tiny_model: Path):  # type: ignore[no-untyped-def]
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(60))
        edit_spec(spec, {"export.quantization": ["fp32", "int8"]})
        result = api.build(spec, out=tmp_path / "out")
        yield spec, result, teacher


def test_only_the_shipped_variant_stays_and_an_unchanged_build_is_all_hits(built) -> None:  # type: ignore[no-untyped-def]
    spec, result, teacher = built
    out, shipped = result.build_dir, result.report["package"]["variant"]
    (other,) = {"fp32", "int8"} - {shipped}
    files = variant_files(out)
    assert other not in files and "model.onnx" in files[shipped]
    export_meta = json.loads((result.stage("export").artifact / "_meta.json").read_text())
    assert export_meta["evicted"] and all(name.startswith(f"variants/{other}/") for name in export_meta["evicted"])
    train = result.stage("train").artifact
    train_meta = json.loads((train / "_meta.json").read_text())
    assert "model/model.safetensors" in train_meta["evicted"] and not (train / "model").exists()
    assert (train / "_meta.json").exists() and result.report["train"]["step_loss"]  # the record and curves stay
    # The report's folder figure is the folder as it is now (but for the report and manifest, written after).
    folder = result.report["folder"]
    written_after = disk_bytes([out / "report.json", out / "report.html", out / "manifest.json"])
    assert folder["bytes"] == pytest.approx(disk_bytes([out]), abs=written_after)
    assert folder["package_bytes"] == disk_bytes([out / "package"]) and folder["weights"] == "freed"
    assert "the trained weights and the variants that did not ship freed" in (out / "report.html").read_text()

    sent = teacher.requests
    again = api.build(spec, out=out)
    assert again.ran == [] and teacher.requests == sent
    assert (out / "package" / "model" / "model.onnx").exists()


def test_a_stage_that_needs_the_freed_files_makes_them_again_first(built) -> None:  # type: ignore[no-untyped-def]
    spec, result, teacher = built
    out = result.build_dir
    edit_spec(spec, {"deploy.max_batch_size": 2})  # verify re-measures every variant; export is unchanged
    rows = {name: (state, why) for name, state, why in plan(spec, out=out).stages}
    assert rows["export"] == ("to run", "re-made: verify needs the files freed after the last build")
    assert rows["verify"][0] == "to run"

    # Exporting again needs the trained weights, freed too: training runs again first.
    assert rows["train"] == ("to run", "re-made: export needs the files freed after the last build")
    assert rows["split"] == ("cached", "")

    sent = teacher.requests
    rebuilt = api.build(spec, out=out)
    assert rebuilt.ran[0] == "train" and {"export", "verify"} <= set(rebuilt.ran)
    assert rebuilt.stage("train").reason.startswith("re-made") and teacher.requests == sent  # labels are kept
    assert [v["name"] for v in rebuilt.report["verify"]["variants"]] == ["fp32", "int8"]
    assert list(variant_files(out)) == [rebuilt.report["package"]["variant"]]  # freed again after shipping
    assert not (rebuilt.stage("train").artifact / "model").exists()


def test_keep_weights_keeps_them_all_and_brings_back_freed_ones(built) -> None:  # type: ignore[no-untyped-def]
    spec, result, _ = built
    out = result.build_dir
    assert len(variant_files(out)) == 1
    done = distillc("build", str(spec), "--out", str(out), "--keep-weights", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout.splitlines()[-1])["data"]["ran"]
    assert ran[0] == "train" and "export" in ran
    files = variant_files(out)
    assert list(files) == ["fp32", "int8"] and all("model.onnx" in names for names in files.values())
    trained = stage_artifact(out, "train") / "model" / "model.safetensors"
    assert trained.exists()
    assert json.loads((out / "report.json").read_text())["folder"]["weights"] == "kept"
    assert "the trained weights and every variant kept: --keep-weights)." in (out / "report.html").read_text()
    # The old flag's name still works.
    again = distillc("build", str(spec), "--out", str(out), "--keep-variants", "--log-format", "json")
    assert json.loads(again.stdout.splitlines()[-1])["data"]["ran"] == []  # kept: nothing to make again
    assert list(variant_files(out)) == ["fp32", "int8"] and trained.exists()


def test_a_freed_file_is_not_damage_but_a_changed_shipped_one_is(built) -> None:  # type: ignore[no-untyped-def]
    spec, result, _ = built
    out, shipped = result.build_dir, result.report["package"]["variant"]
    export = result.stage("export").artifact
    (export / "variants" / shipped / "generation.json").write_text("{}")
    again = api.build(spec, out=out)
    assert "export" in again.ran and again.stage("export").reason.startswith("cached artifact damaged")
