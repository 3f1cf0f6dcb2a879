"""`distillc init`: a commented, valid spec and a small inputs file to start from."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from distillc.errors import DistillcError
from distillc.package.render import render
from distillc.spec.schema import SCHEMA_FILE, schema_text

SPEC_FILE = "spec.yaml"
INPUTS_FILE = "inputs.jsonl"


@dataclass(frozen=True)
class Starter:
    instructions: str
    examples: tuple[tuple[str, str | dict[str, object]], ...]
    inputs: tuple[str, ...]
    labels: tuple[str, ...] = ()
    schema: dict[str, object] | None = None
    max_new_tokens: int = 8
    max_seq_len: int = 192


STARTERS = {
    "label": Starter(
        instructions="Route the support ticket to the team that should handle it.",
        labels=("billing", "technical", "account", "other"),
        examples=(
            ("I was charged twice for my March invoice.", "billing"),
            ("The app crashes every time I open the settings page.", "technical"),
            ("How do I change the email address on my profile?", "account"),
            ("Do you have an office in Lisbon?", "other"),
        ),
        inputs=(
            "My card was declined but the money still left my account.",
            "Export to PDF has been broken since the last update.",
            "I forgot my password and the reset email never arrives.",
            "Can I get a refund for the unused months of my plan?",
            "The dashboard takes a full minute to load.",
            "Please delete my account and all my data.",
            "Are you hiring engineers this year?",
            "Why is there a currency conversion fee on my bill?",
            "Sync stopped working between my phone and laptop.",
            "I want to add a second admin to our workspace.",
            "Do you offer discounts for non-profits?",
            "The search returns no results even for exact titles.",
        ),
    ),
    "json": Starter(
        instructions="Extract the product, the quantity and the delivery city from the order message.",
        schema={
            "type": "object",
            "properties": {
                "product": {"type": "string"},
                "quantity": {"type": "integer"},
                "city": {"type": ["string", "null"]},
            },
            "required": ["product", "quantity", "city"],
            "additionalProperties": False,
        },
        examples=(
            ("Please send 3 boxes of green tea to Porto.", {"product": "green tea", "quantity": 3, "city": "Porto"}),
            (
                "I'd like one standing desk delivered in Oslo.",
                {"product": "standing desk", "quantity": 1, "city": "Oslo"},
            ),
            ("Two office chairs, please.", {"product": "office chair", "quantity": 2, "city": None}),
        ),
        inputs=(
            "Could you ship 5 notebooks to Madrid?",
            "One espresso machine for our Berlin office, thanks.",
            "We need 12 monitor arms delivered to Lyon.",
            "Send a single bike helmet to Ghent.",
            "Four packs of printer paper.",
            "I want 2 yoga mats sent to Dublin.",
            "Please deliver 7 desk lamps in Vienna.",
            "A dozen coffee mugs to Zurich, please.",
            "3 wireless keyboards for the Prague team.",
            "Ship one whiteboard to Krakow.",
        ),
        max_new_tokens=48,
        max_seq_len=256,
    ),
    "text": Starter(
        instructions="Rewrite the message as one short, polite sentence.",
        examples=(
            ("send me the report NOW it is late again", "Could you please send me the report as soon as possible?"),
            ("why is the build broken AGAIN??", "Could you let me know why the build is failing?"),
            ("meeting moved to 3, deal with it", "The meeting has been moved to 3 pm."),
        ),
        inputs=(
            "stop cc'ing me on these threads",
            "the coffee machine is broken fix it",
            "where are the slides i asked for yesterday",
            "your code broke production",
            "nobody answered my ticket in a week",
            "i need the budget numbers today",
            "who took my charger",
            "the invoice is wrong again",
            "call me back right now",
            "this document has typos everywhere",
        ),
        max_new_tokens=48,
        max_seq_len=192,
    ),
}


def init(folder: Path, task: str = "label", force: bool = False) -> list[Path]:
    """Write spec.yaml, inputs.jsonl and the schema into `folder`; returns the files written."""
    starter = STARTERS[task]
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
            labels=list(starter.labels),
            schema=json.dumps(starter.schema) if starter.schema else "",
            max_new_tokens=starter.max_new_tokens,
            max_seq_len=starter.max_seq_len,
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
