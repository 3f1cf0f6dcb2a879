"""The spec's JSON Schema, from the raw model: what editors use for completion, hover docs and checks."""

from __future__ import annotations

import json
from typing import Any

from distillc.spec.raw import RawSpec

SCHEMA_FILE = "distillc.schema.json"


def spec_schema() -> dict[str, Any]:
    schema = RawSpec.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(spec_schema(), indent=2) + "\n"
