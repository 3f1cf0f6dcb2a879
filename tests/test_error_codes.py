"""The error registry: every code raised is registered with one meaning, the README's table is the
registry's, and `--log-format json` ends a failed build with the error as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from distillc.docs import section
from distillc.error_codes import CODES, END, START, markdown_table
from tests.conftest import review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc

ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"""["']([EW]\d{3})["']""")


def raised_codes() -> dict[str, list[str]]:
    """Every code written as a literal in the product's source, and where."""
    found: dict[str, list[str]] = {}
    for folder in ("compiler", "runtime", "templates"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "error_codes.py":
                continue
            for code in CODE.findall(path.read_text(encoding="utf-8")):
                found.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_code_raised_is_registered_and_every_registered_code_is_raised() -> None:
    raised = raised_codes()
    assert len(raised) > 40  # the scan sees the product's codes
    assert sorted(set(raised) - set(CODES)) == []
    assert sorted(set(CODES) - set(raised)) == []
    assert all(c.title and c.when and c.fix for c in CODES.values())


def test_the_readme_table_is_generated_from_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = section(readme, START, END)
    assert table == markdown_table(), "regenerate it: python -m distillc.error_codes README.md"


def test_a_spec_error_ends_the_json_log_as_json(tmp_path: Path) -> None:
    (tmp_path / "inputs.txt").write_text("fine\n", encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "task": {
                    "instructions": "The sentiment?",
                    "examples": [{"input": "fine", "output": "positive"}],
                    "output": {"type": "label", "labels": ["positive"]},
                },
                "inputs": {"source": {"path": "inputs.txt"}},
                "teacher": {"model": "m", "base_url": "http://127.0.0.1:9/v1"},
                "student": {"base_model": "s"},
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    result = distillc("build", str(spec), "--out", str(tmp_path / "out"), "--log-format", "json")
    assert result.returncode == 1
    last = json.loads(result.stderr.strip().splitlines()[-1])
    assert last["kind"] == "error" and last["data"]["code"] == "E109"
    [label_error] = [d for d in last["data"]["diagnostics"] if d["severity"] == "error"]  # W120 besides
    assert label_error["code"] == "E110" and "at least two" in label_error["message"]
    output_line = spec.read_text(encoding="utf-8").splitlines().index("  output:") + 1
    assert (label_error["file"], label_error["line"]) == (str(spec), output_line)


def test_a_stage_error_ends_the_json_log_as_json(tmp_path: Path, tiny_model: Path) -> None:
    with FakeTeacher(sentiment) as teacher:  # two inputs: labeled, then too few to split
        spec = write_spec(tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(2))
        result = distillc("build", str(spec), "--out", str(tmp_path / "out"), "--log-format", "json")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.strip().splitlines()]  # every line is JSON
    assert lines[-1]["kind"] == "error" and lines[-1]["data"]["code"] == "E303"
    assert "too few to train" in lines[-1]["message"] and lines[-1]["data"]["help"]
    assert any(e["kind"] == "stage_done" and e["stage"] == "label" for e in lines)


def test_the_readmes_spec_reference_is_generated_from_the_schema() -> None:
    from distillc.spec import reference

    table = section((ROOT / "README.md").read_text(encoding="utf-8"), reference.START, reference.END)
    assert table == reference.markdown_table(), "regenerate it: python -m distillc.spec.reference README.md"
    assert "| `deploy.usd_per_hour` |" in table and "| `student.prune.candidates` |" in table
