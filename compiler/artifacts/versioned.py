"""Reading and writing an artifact file under its schema version."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_json, write_json
from distillc.errors import DistillcError


def write_record(path: Path, record: Mapping[str, Any], version: int) -> None:
    write_json(path, dict(record), schema_version=version)


def read_record(path: Path, version: int) -> dict[str, Any]:
    """The record at `path`, or E206 when it was written under another schema version (by another distillc)."""
    data = read_json(path)
    found = data.pop("schema_version", None)
    if found != version:
        raise DistillcError(
            "E206",
            f"{path} is an artifact of schema version {found!r}; this distillc reads version {version}",
            help="it was written by another distillc version: rebuild the stage (distillc build SPEC --force STAGE) "
            "or use the distillc that wrote it",
        )
    return data
