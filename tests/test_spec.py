"""The spec contract: valid specs resolve; mistakes get precise, complete, secret-safe diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillc.spec import load_spec, validate_file
from distillc.spec.diagnostics import SpecError
from distillc.spec.ir import cache_view
from tests.conftest import VALID, write
from tests.helpers import distillc

SPECS = sorted((Path(__file__).parent.parent / "specs").glob("*.yaml"))


def messages(tmp_path: Path, text: str) -> list[str]:
    spec, diagnostics, _ = validate_file(write(tmp_path, text))
    return [d.message for d in diagnostics]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_example_spec_validates(path: Path) -> None:
    spec, diagnostics, _ = validate_file(path)
    assert spec is not None, diagnostics
    assert not [d for d in diagnostics if d.severity == "error"]


def test_valid_spec_resolves_defaults_and_absolute_paths(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, VALID))
    assert spec.teacher.provider == "openai"
    assert spec.teacher.api_key_env == "OPENAI_API_KEY"
    assert spec.evaluation.holdout == 0.15
    assert spec.task.labels == ("billing", "bug", "other")
    assert Path(spec.inputs.sources[0].path) == (tmp_path / "inputs.txt").resolve()
    assert spec.inputs.sources[0].format == "txt"


def test_every_quantized_variant_is_tried_by_default_as_the_readme_says(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, VALID))  # no export: section
    assert spec.export.quantization == ("fp32", "int8", "int4")
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `export.quantization` |"))
    assert '`["fp32", "int8", "int4"]`' in row
    assert "by default every variant is tried (`[fp32, int8, int4]`)" in readme


def test_cache_view_leaves_out_fields_that_cannot_change_outputs(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, VALID))
    assert "max_concurrency" not in cache_view(spec.teacher)
    assert "api_key_env" not in cache_view(spec.teacher)
    [source] = cache_view(spec.inputs)["sources"]
    assert "path" not in source and "output_path" not in source
    assert source["sha256"]


def test_unknown_key_points_at_the_key_and_suggests_the_fix(tmp_path: Path) -> None:
    text = VALID.replace("teacher: {model: gpt-4o-mini}", "teacher:\n  model: gpt-4o-mini\n  temprature: 0.2")
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    rendered = caught.value.render()
    assert "spec.yaml:13:3: error[E104] unknown key 'temprature' in teacher" in rendered
    assert "13 |   temprature: 0.2\n   |   ^^^^^^^^^^\n" in rendered
    assert "help: did you mean 'temperature'?" in rendered


def test_all_errors_are_reported_at_once_in_source_order(tmp_path: Path) -> None:
    text = VALID.replace("name: tickets", "name: Tickets!").replace(
        "student: {base_model: smollm2-135m-instruct}", "student: {base_model: x, epochs: zero}"
    )
    spec, diagnostics, source = validate_file(write(tmp_path, text))
    assert spec is None
    codes = [d.code for d in diagnostics]
    assert codes == ["E103", "E101"]
    assert "'name'" in diagnostics[0].message
    assert "'student.epochs'" in diagnostics[1].message


def test_missing_required_key(tmp_path: Path) -> None:
    text = VALID.replace("teacher: {model: gpt-4o-mini}", "teacher: {provider: openai}")
    assert messages(tmp_path, text) == ["missing required key 'model' in teacher"]


def test_label_example_outside_the_label_set(tmp_path: Path) -> None:
    text = VALID.replace("output: other}", "output: praise}")
    assert messages(tmp_path, text) == ["example 3: output 'praise' is not one of the labels (billing, bug, other)"]


def test_label_type_without_labels(tmp_path: Path) -> None:
    text = VALID.replace("output: {type: label, labels: [billing, bug, other]}", "output: {type: label}")
    assert "output type 'label' needs 'labels' with at least two entries" in messages(tmp_path, text)


def test_missing_input_file_and_bad_holdout(tmp_path: Path) -> None:
    text = VALID.replace("path: inputs.txt", "path: nope.txt") + "evaluation: {holdout: 0.7}\n"
    found = messages(tmp_path, text)
    assert any(m.startswith("input file not found:") for m in found)
    assert any("'evaluation.holdout'" in m for m in found)


def test_api_key_pasted_as_env_name_is_refused_and_never_echoed(tmp_path: Path) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    text = VALID.replace("teacher: {model: gpt-4o-mini}", f"teacher: {{model: gpt-4o-mini, api_key_env: {secret}}}")
    result = distillc("validate", str(write(tmp_path, text)))
    assert result.returncode == 1
    assert "error[E113]" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert "api_key_env: ****" in result.stderr  # the line is shown, the value masked


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    spec, diagnostics, source = validate_file(write(tmp_path, "name: x\ntask: [unclosed\n"))
    assert spec is None
    assert diagnostics[0].code == "E100"


def test_duplicate_key(tmp_path: Path) -> None:
    assert "duplicate key 'name'" in messages(tmp_path, VALID + "name: again\n")


def test_few_examples_is_a_warning_not_an_error(tmp_path: Path) -> None:
    text = VALID.replace('    - {input: "love it", output: other}\n', "")
    spec, diagnostics, _ = validate_file(write(tmp_path, text))
    assert spec is not None
    assert [d.severity for d in diagnostics] == ["warning"]


def test_validate_cli_exit_codes_and_json(tmp_path: Path) -> None:
    good = write(tmp_path, VALID)
    assert distillc("validate", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("teacher: {model: gpt-4o-mini}", "teacher: {model: m, colour: red}"))
    result = distillc("validate", str(bad), "--format", "json")
    assert result.returncode == 1
    [row] = json.loads(result.stdout)
    assert (row["line"], row["column"], row["code"]) == (11, 21, "E104")
    assert "Traceback" not in result.stderr


def test_unreadable_spec_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = distillc("build", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{tmp_path / 'nope.yaml'}: error[E107] cannot read spec: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'nope.yaml'}'"
    )
