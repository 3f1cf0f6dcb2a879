"""JSON tasks: every answer is one JSON value, within the spec's JSON Schema when it gives one.

The teacher is held to the schema by the endpoint's structured output; targets are compact JSON with keys in
the schema's order; the student decodes within the schema (distillc_runtime.constrain.JsonGrammar); the
metrics are the shares of answers that parse, that validate, that equal the teacher's, and per top-level field.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from distillc.task.base import Pairs, Problem, Starter, StudentTokens
from distillc.task.stats import mean_with_interval
from distillc_runtime.answers import Agreement, strip_fence

if TYPE_CHECKING:
    from distillc.spec.ir import TaskIR

_INVALID = object()


def in_schema_order(schema: Any, value: Any) -> Any:
    """`value` with each object's keys in the order of its schema's `properties` (others after, as given).

    The student's decoding is constrained by the schema, which writes properties in that order; a target in
    another order would teach the student a sequence its decoding then forbids."""
    if isinstance(value, dict) and isinstance(schema, dict):
        properties = schema.get("properties") or {}
        ordered = [k for k in properties if k in value] + [k for k in value if k not in properties]
        return {k: in_schema_order(properties.get(k, {}), value[k]) for k in ordered}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [in_schema_order(schema["items"], item) for item in value]
    return value


def schema_violation(schema: str, value: Any) -> str:
    """The first way `value` breaks the JSON Schema (text), or "" when it conforms."""
    error = next(iter(_validator(schema).iter_errors(value)), None)
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"does not match the JSON Schema at {where}: {error.message[:200]}"


@functools.lru_cache(maxsize=8)
def _validator(schema: str) -> Any:
    import jsonschema

    parsed = json.loads(schema)
    return jsonschema.validators.validator_for(parsed)(parsed)


class JsonValue:
    name = "json"
    metrics = ("exact_match",)
    output_fields = frozenset({"schema"})
    starter = Starter(
        instructions="Extract the product, the quantity and the delivery city from the order message.",
        output={
            "schema": json.dumps(
                {
                    "type": "object",
                    "properties": {
                        "product": {"type": "string"},
                        "quantity": {"type": "integer"},
                        "city": {"type": ["string", "null"]},
                    },
                    "required": ["product", "quantity", "city"],
                    "additionalProperties": False,
                }
            )
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
    )

    def check(self, output: Any, examples: list[Any]) -> list[Problem]:
        import jsonschema

        out: list[Problem] = []
        validator = None
        if (schema := output.json_schema) is not None:
            try:
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(schema)
                validator = cls(schema)
            except jsonschema.SchemaError as exc:
                message = f"'schema' is not a valid JSON Schema: {exc.message}"
                out.append(Problem("E118", message, ("task", "output", "schema", *exc.path)))
        for i, example in enumerate(examples):
            if problem := _example_problem(example.output, validator):
                out.append(Problem("E111", f"example {i + 1}: {problem}", ("task", "examples", i, "output")))
        return out

    def contract(self, task: TaskIR) -> str:
        text = "Answer with a single JSON value and nothing else."
        return text + (f" It must conform to this JSON Schema: {task.json_schema}" if task.json_schema else "")

    def accept(self, task: TaskIR, answer: str) -> tuple[str | None, str]:
        try:
            value = json.loads(strip_fence(answer.strip()))
        except ValueError as exc:
            return None, f"not valid JSON: {exc}"
        if task.json_schema and (problem := schema_violation(task.json_schema, value)):
            return None, problem
        if task.json_schema:
            value = in_schema_order(json.loads(task.json_schema), value)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")), ""

    def endpoint_format(self, task: TaskIR) -> dict[str, Any]:
        if not task.json_schema:
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": json.loads(task.json_schema)}}

    def choices(self, task: TaskIR) -> tuple[str, ...]:
        return ()

    def constraint(self, task: TaskIR, tokens: StudentTokens) -> dict[str, Any]:
        return {"json_schema": task.json_schema, "answer_eos": tokens.eos_id, "vocab_size": tokens.vocab_size}

    def answer_check(self, task: TaskIR) -> dict[str, Any]:
        return {"json": True}

    def agrees(self, task: TaskIR, expected: str, predicted: str) -> bool:
        return Agreement("json")(expected, predicted)

    def scores(self, task: TaskIR, pairs: Pairs) -> dict[str, Any]:
        parsed, valid, exact = [], [], []
        fields: dict[str, list[float]] = {}
        for expected, predicted in pairs:
            want = _load(expected)
            got = _load(predicted)
            parsed.append(float(got is not _INVALID))
            ok = got is not _INVALID and not (task.json_schema and schema_violation(task.json_schema, got))
            valid.append(float(ok))
            exact.append(float(self.agrees(task, expected, predicted)))
            if isinstance(want, dict):
                for key, value in want.items():
                    fields.setdefault(key, []).append(float(isinstance(got, dict) and got.get(key) == value))
        return {
            "parses": mean_with_interval(parsed),
            "schema_valid": mean_with_interval(valid),
            "exact_match": mean_with_interval(exact),
            "per_field": {key: mean_with_interval(values) for key, values in sorted(fields.items())},
        }

    def gated(self, task: TaskIR, metric: str, pairs: Pairs) -> dict[str, Any]:
        return mean_with_interval([float(self.agrees(task, e, p)) for e, p in pairs])

    def degenerate(self, task: TaskIR, pairs: Pairs) -> list[str]:
        return []


def _example_problem(output: Any, validator: Any) -> str | None:
    if isinstance(output, str):
        try:
            output = json.loads(output)
        except ValueError:
            return "a json example's output must be a mapping or valid JSON text"
    if validator is not None:
        errors = sorted(validator.iter_errors(output), key=lambda e: list(e.path))
        if errors:
            where = "/".join(map(str, errors[0].path)) or "the output"
            return f"output does not match the schema at {where}: {errors[0].message}"
    return None


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID
