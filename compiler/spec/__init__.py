"""The spec: YAML with source spans -> raw pydantic model -> semantic checks -> frozen IR."""

from distillc.spec.ir import SpecIR
from distillc.spec.load import load_spec, validate_file

__all__ = ["SpecIR", "load_spec", "validate_file"]
