"""`distillc init` and `distillc schema`: a valid start, and a schema that agrees with the validator."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from distillc.spec.schema import SCHEMA_FILE, spec_schema
from tests.helpers import distillc

SPECS = Path(__file__).parent.parent / "specs"


@pytest.mark.parametrize("task", ["label", "json", "text"])
def test_init_writes_a_spec_that_validates_strictly(tmp_path: Path, task: str) -> None:
    result = distillc("init", str(tmp_path / "proj"), "--task", task)
    assert result.returncode == 0, result.stderr
    spec = tmp_path / "proj" / "spec.yaml"
    assert spec.read_text().startswith(f"# yaml-language-server: $schema={SCHEMA_FILE}\n")
    checked = distillc("validate", str(spec), "--strict")
    assert checked.returncode == 0, checked.stderr
    jsonschema.validate(yaml.safe_load(spec.read_text()), spec_schema())
    assert (tmp_path / "proj" / "inputs.jsonl").read_text().count("\n") >= 10


def test_init_does_not_overwrite_without_force(tmp_path: Path) -> None:
    assert distillc("init", str(tmp_path)).returncode == 0
    (tmp_path / "spec.yaml").write_text("name: mine\n")
    again = distillc("init", str(tmp_path))
    assert again.returncode == 1
    assert "error[E701]" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "spec.yaml").read_text() == "name: mine\n"
    assert distillc("init", str(tmp_path), "--force").returncode == 0


def test_committed_schema_is_what_the_command_prints() -> None:
    printed = distillc("schema")
    assert printed.returncode == 0
    assert printed.stdout == (SPECS / SCHEMA_FILE).read_text()


def test_schema_accepts_example_specs_and_rejects_unknown_keys() -> None:
    schema = spec_schema()
    for path in SPECS.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        jsonschema.validate(data, schema)
        assert path.read_text().startswith(f"# yaml-language-server: $schema={SCHEMA_FILE}\n"), path
        data["teacher"]["temprature"] = 0
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(data, schema)


def test_pre_commit_hooks_run_validate_on_spec_files(tmp_path: Path) -> None:
    import re

    hooks = yaml.safe_load((SPECS.parent / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"distillc-validate", "distillc-validate-strict"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    for hook in hooks:
        assert re.search(hook["files"], "specs/review-sentiment.yaml")
        assert not re.search(hook["files"], ".github/workflows/ci.yaml")
        program, *args = hook["entry"].split()
        assert program == "distillc"
        good = distillc(*args, str(SPECS / "review-sentiment.yaml"), str(SPECS / "review-sentiment.yaml"))
        assert good.returncode == 0, good.stderr
        assert distillc(*args, str(SPECS / "review-sentiment.yaml"), str(bad)).returncode == 1
