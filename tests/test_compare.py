"""`distillc compare`: two real build folders, told apart by their report.json files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distillc import api
from distillc.report.compare import score_row, spec_changes
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Path]:
    """A, then B: the same build at twice the machine price (B starts from a copy of A's folder: all hits)."""
    folder = tmp_path_factory.mktemp("compare")
    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            folder,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(60),
            changes={"deploy.usd_per_hour": 0.1},
        )
        edit_spec(spec, {"export.quantization": ["fp32"]})
        api.build(spec, out=folder / "a")
        shutil.copytree(folder / "a", folder / "b")
        edit_spec(spec, {"deploy.usd_per_hour": 0.2})
        api.build(spec, out=folder / "b")
    return folder / "a", folder / "b"


def test_compare_names_the_changed_spec_field_and_what_it_moved(two_builds: tuple[Path, Path]) -> None:
    a, b = two_builds
    shown = distillc("compare", str(a), str(b))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    changed = [line.split() for line in lines if line.startswith("deploy.")]
    assert changed == [["deploy.usd_per_hour", "0.1", "0.2"]]  # the only field that differs
    assert not any(line.startswith(("spec_path", "student.", "task.")) for line in lines)
    cost = next(line for line in lines if "student $ per 1,000" in line)
    assert cost.rstrip().endswith("+100%")
    p50 = next(line for line in lines if "student p50" in line)
    assert p50.rstrip().endswith(" ms")  # the same latency: nothing in the change column


def test_compare_as_json_carries_each_report_number(two_builds: tuple[Path, Path]) -> None:
    a, b = two_builds
    shown = distillc("compare", str(a), str(b), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    report_a = json.loads((a / "report.json").read_text())
    report_b = json.loads((b / "report.json").read_text())
    rows = {(r["section"], r["name"]): r for r in result["rows"]}
    shipped = rows[("quality", f"shipped, {report_a['headline']['metric']}")]
    student = report_a["headline"]["student"]
    assert shipped["a"] == {"value": student["score"], "interval": student["interval"]}
    assert shipped["note"] == "intervals overlap" and shipped["change"] == "+0.000"
    assert rows[("size", "package")]["a"] == report_a["package"]["bytes"]
    assert rows[("size", "build folder")]["b"] == report_b["folder"]["bytes"]
    assert rows[("data", "train / held-out")]["b"] == f"{report_b['split']['train']} / {report_b['split']['holdout']}"
    assert rows[("cost", "student $ per 1,000")]["b"] == report_b["headline"]["student"]["usd_per_1k"]
    accuracy = rows[("quality before export", "accuracy")]["a"]
    assert accuracy["value"] == report_a["evaluation"]["metrics"]["accuracy"]["value"]
    assert result["spec"] == [{"field": "deploy.usd_per_hour", "a": 0.1, "b": 0.2}]


def test_scores_are_told_apart_only_when_their_intervals_are() -> None:
    low = {"score": 0.60, "interval": [0.50, 0.70]}
    assert score_row("q", "m", low, {"score": 0.68, "interval": [0.60, 0.76]})["note"] == "intervals overlap"
    apart = score_row("q", "m", low, {"score": 0.90, "interval": [0.82, 0.97]})
    assert apart["note"] == "intervals apart" and apart["change"] == "+0.300"
    assert score_row("q", "m", None, low)["change"] == ""


def test_specs_differ_field_by_field_lists_whole() -> None:
    a = {"spec": {"spec_path": "/x", "student": {"epochs": 2, "lora": {"rank": 8}}, "export": {"quantization": ["a"]}}}
    b = {"spec": {"spec_path": "/y", "student": {"epochs": 2, "lora": {"rank": 16}}, "export": {"quantization": ["b"]}}}
    assert spec_changes(a, b) == [
        {"field": "export.quantization", "a": ["a"], "b": ["b"]},
        {"field": "student.lora.rank", "a": 8, "b": 16},
    ]
    assert spec_changes({}, b) is None


def test_a_folder_without_a_report_is_named(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    shown = distillc("compare", str(two_builds[0]), str(tmp_path))
    assert shown.returncode == 1
    assert "E204" in shown.stderr and str(tmp_path) in shown.stderr and "Traceback" not in shown.stderr
