"""`distillc init`: a commented, valid spec and a small inputs file to start from."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from distillc.errors import DistillcError
from distillc.package.render import render
from distillc.spec.schema import SCHEMA_FILE, schema_text
from distillc.task import task_type

SPEC_FILE = "spec.yaml"
INPUTS_FILE = "inputs.jsonl"


def init(folder: Path, task: str = "label", force: bool = False) -> list[Path]:
    """Write spec.yaml, inputs.jsonl and the schema into `folder`; returns the files written."""
    starter = task_type(task).starter
    spec_path = folder / SPEC_FILE
    if spec_path.exists() and not force:
        raise DistillcError("E701", f"{spec_path} already exists", help="pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    name = spec_name(folder.resolve().name)
    spec_path.write_text(
        render(
            "init_spec.yaml.j2",
            name=name,
            spec_file=SPEC_FILE,
            schema_file=SCHEMA_FILE,
            inputs_file=INPUTS_FILE,
            instructions_yaml=_yaml_string(starter.instructions),
            examples=[
                {"input_yaml": _yaml_string(i), "output_yaml": json.dumps(o, ensure_ascii=False)}
                for i, o in starter.examples
            ],
            output_type=task,
            output=dict(starter.output),
            max_new_tokens=starter.max_new_tokens,
            min_score=0.6,
        ),
        encoding="utf-8",
    )
    inputs = folder / INPUTS_FILE
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in starter.inputs), encoding="utf-8")
    schema = folder / SCHEMA_FILE
    schema.write_text(schema_text(), encoding="utf-8")
    return [spec_path, inputs, schema]


def _yaml_string(text: str) -> str:
    """A double-quoted YAML scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def spec_name(folder: str) -> str:
    """A name the spec accepts ([a-z0-9-], 64 at most) from a folder's: accents dropped, other characters
    turned into dashes ("Täsk Ünïcode" -> "task-unicode")."""
    ascii_name = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode().lower()
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", ascii_name)).strip("-")[:64].strip("-")
    return name or "my-task"
