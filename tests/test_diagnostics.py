"""Snapshots of the exact diagnostic text for distinct mistakes: what a user sees is part of the contract.

Regenerate after an intended change with UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distillc.spec import validate_file
from distillc.spec.diagnostics import render_all
from tests.conftest import TICKETS

SNAPSHOTS = Path(__file__).parent / "snapshots" / "diagnostics"

BASE = (
    TICKETS
    + """\
inputs:
  source: {path: inputs.jsonl, field: text}
teacher:
  model: gpt-4o-mini
  temperature: 0
student:
  base_model: smollm2-135m-instruct
  epochs: 3
evaluation: {holdout: 0.15, min_score: 0.8}
"""
)

JSON_TASK = (
    BASE.replace(
        "  output: {type: label, labels: [billing, bug, other]}",
        "  output: {type: json, schema: {type: object, required: [team], properties: {team: {type: string}}}}",
    )
    .replace("output: billing}", "output: {team: billing}}")
    .replace("output: bug}", "output: {team: bug}}")
    .replace("output: other}", "output: {team: other}}")
)

# (case, old text, new text): each is one mistake made to the valid BASE spec.
CASES: list[tuple[str, str, str]] = [
    ("yaml_unclosed_flow", "labels: [billing, bug, other]}", "labels: [billing, bug, other}"),
    ("yaml_tab_indent", "  model: gpt-4o-mini", "\tmodel: gpt-4o-mini"),
    ("yaml_bad_indent", "  temperature: 0", "   temperature: 0"),
    ("not_a_mapping", BASE, "- just\n- a list\n"),
    ("empty_file", BASE, ""),
    ("unknown_top_level_key", "student:", "studnet:"),
    ("unknown_nested_key", "  temperature: 0", "  temprature: 0"),
    ("unknown_key_no_close_match", "  temperature: 0", "  colour: blue"),
    ("missing_section", "teacher:\n  model: gpt-4o-mini\n  temperature: 0\n", ""),
    ("missing_nested_key", "  model: gpt-4o-mini\n", ""),
    ("wrong_type_int", "epochs: 3", 'epochs: "three"'),
    (
        "wrong_type_list",
        '  examples:\n    - {input: "card declined", output: billing}\n    - {input: "app crashes", output: bug}\n'
        '    - {input: "love it", output: other}\n',
        "  examples: billing\n",
    ),
    ("wrong_type_mapping", "evaluation: {holdout: 0.15, min_score: 0.8}", "evaluation: strict"),
    ("bad_enum_output_type", "type: label,", "type: labels,"),
    ("bad_enum_provider", "  model: gpt-4o-mini\n", "  model: gpt-4o-mini\n  provider: openia\n"),
    ("bad_name", "name: tickets", "name: My Tickets"),
    ("holdout_out_of_range", "holdout: 0.15", "holdout: 0.7"),
    ("min_score_above_one", "min_score: 0.8", "min_score: 80"),
    ("negative_learning_rate", "  epochs: 3", "  epochs: 3\n  learning_rate: -1e-4"),
    (
        "no_examples",
        '  examples:\n    - {input: "card declined", output: billing}\n    - {input: "app crashes", output: bug}\n'
        '    - {input: "love it", output: other}\n',
        "  examples: []\n",
    ),
    ("example_missing_output", '{input: "app crashes", output: bug}', '{input: "app crashes"}'),
    ("label_without_labels", "{type: label, labels: [billing, bug, other]}", "{type: label}"),
    ("duplicate_labels", "labels: [billing, bug, other]", "labels: [billing, bug, bug, other]"),
    ("example_outside_label_set", "output: other}", "output: praise}"),
    ("labels_on_text_task", "{type: label, labels", "{type: text, labels"),
    ("duplicate_key", "  epochs: 3\n", "  epochs: 3\n  epochs: 4\n"),
    ("input_file_missing", "path: inputs.jsonl", "path: data/missing.jsonl"),
    ("input_unsupported_type", "path: inputs.jsonl", "path: inputs.xlsx"),
    ("jsonl_without_field", "{path: inputs.jsonl, field: text}", "{path: inputs.jsonl}"),
    ("api_key_in_env_name", "  temperature: 0", "  api_key_env: sk-proj-0123456789abcdefghijklmnopqrstuvwxyz"),
    ("env_name_with_spaces", "  temperature: 0", "  api_key_env: MY KEY"),
    (
        "local_teacher_with_base_url",
        "  model: gpt-4o-mini\n",
        "  provider: local\n  model: smollm2-135m-instruct\n  base_url: http://127.0.0.1:8000/v1\n",
    ),
    ("few_examples_warning", '    - {input: "love it", output: other}\n', ""),
    ("budget_without_price_warning", "evaluation:", "budget: {max_usd: 5}\nevaluation:"),
    ("lora_settings_without_lora", "  epochs: 3", "  epochs: 3\n  lora: {r: 8}"),
    ("prune_zero_layers", "  epochs: 3", "  epochs: 3\n  prune: {candidates: [15, 0]}"),
    (
        "inputs_source_and_generate",
        "{path: inputs.jsonl, field: text}",
        "{path: inputs.jsonl, field: text}\n  generate: {count: 10}",
    ),
    ("inputs_neither", "  source: {path: inputs.jsonl, field: text}", "  generate_count: 10"),
    ("generate_count_zero", "  source: {path: inputs.jsonl, field: text}", "  generate: {count: 0}"),
    ("quantization_listed_twice", "evaluation:", "export: {quantization: [fp32, int8, fp32]}\nevaluation:"),
    (
        "alias_bomb",
        "name: tickets",
        "name: tickets\nx-a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nx-b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "x-c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nx-d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "x-e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
    ),
    ("several_errors_sorted", "name: tickets", "name: Tickets\nextra: 1"),
    ("batch_with_local_teacher", "  model: gpt-4o-mini\n", "  model: gpt-4o-mini\n  provider: local\n  batch: true\n"),
]

JSON_CASES: list[tuple[str, str, str]] = [
    ("json_example_invalid_text", "output: {team: bug}}", "output: '{team: bug'}"),
    ("json_example_breaks_schema", "output: {team: bug}}", "output: {team: 7}}"),
    ("json_schema_invalid", "team: {type: string}", "team: {type: strin}"),
    ("metric_for_wrong_type", "{holdout: 0.15, min_score: 0.8}", "{holdout: 0.15, metric: accuracy}"),
    ("text_metric_for_json", "{holdout: 0.15, min_score: 0.8}", "{holdout: 0.15, metric: chrf}"),
    ("schema_on_label_task", "{type: json, schema", "{type: label, labels: [a, b], schema"),
    ("linear_candidate_on_json_task", "  epochs: 3", "  epochs: 3\n  candidates: [linear]"),
]


def rendered(tmp_path: Path, text: str) -> str:
    (tmp_path / "inputs.jsonl").write_text('{"text": "hi"}\n')
    (tmp_path / "inputs.xlsx").write_text("")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    _, diagnostics, source = validate_file(spec)
    return render_all(diagnostics, source, "spec.yaml").replace(str(tmp_path), "<dir>") + "\n"


def check(name: str, output: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(output)
    assert output == path.read_text(), f"diagnostic text changed for {name}"


@pytest.mark.parametrize(("name", "old", "new"), CASES + JSON_CASES, ids=[c[0] for c in CASES + JSON_CASES])
def test_diagnostic_snapshot(tmp_path: Path, name: str, old: str, new: str) -> None:
    base = JSON_TASK if (name, old, new) in JSON_CASES else BASE
    assert old in base, f"case {name} does not apply"
    output = rendered(tmp_path, base.replace(old, new, 1))
    assert output.strip(), f"case {name} produced no diagnostic"
    assert "Traceback" not in output
    check(name, output)


def test_base_specs_are_valid(tmp_path: Path) -> None:
    assert rendered(tmp_path, BASE) == "\n"
    assert rendered(tmp_path, JSON_TASK) == "\n"


def test_snapshots_cover_many_distinct_codes() -> None:
    codes = set()
    for path in SNAPSHOTS.glob("*.txt"):
        for line in path.read_text().splitlines():
            if line.startswith("spec.yaml") and "[" in line:
                codes.add(line.split("[", 1)[1].split("]", 1)[0])
    assert len(list(SNAPSHOTS.glob("*.txt"))) >= 25
    assert len(codes) >= 15, sorted(codes)
