"""Read a spec file, collect every problem at once, and resolve it into the frozen IR."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from distillc.redact import key_like
from distillc.spec import ir
from distillc.spec.diagnostics import Diagnostic, SpecError, sort_key
from distillc.spec.raw import (
    DEFAULT_AGREE_AT,
    Budget,
    Deploy,
    Evaluation,
    Export,
    Gold,
    Inputs,
    Lora,
    RawSpec,
    Source,
    Student,
    Task,
    Teacher,
)
from distillc.spec.source import SourceMap, load_yaml
from distillc.task import TYPES, task_type
from distillc_runtime.answers import graded
from distillc_runtime.integrity import sha256 as file_sha256

INPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".txt": "txt", ".parquet": "parquet"}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_LIKE = re.compile(r"^(sk-|sk_|gsk_|hf_|xai-|AKIA)|^[A-Za-z0-9_\-]{32,}$")


def load_spec(path: str | Path) -> ir.SpecIR:
    """The resolved spec, or SpecError carrying every diagnostic (warnings never fail)."""
    spec, diagnostics, source = validate_file(path)
    if spec is None:
        raise SpecError(diagnostics, source, str(path))
    return spec


def validate_file(path: str | Path) -> tuple[ir.SpecIR | None, list[Diagnostic], str]:
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic("E107", f"cannot read spec: {exc}", 0, 0)], ""
    data, smap, diags = load_yaml(source)
    if data is None:
        return None, diags, source
    if not isinstance(data, dict):
        diags.append(Diagnostic("E108", "the spec must be a mapping of keys to values", 0, len(source)))
        return None, diags, source
    try:
        raw = RawSpec.model_validate(data)
    except ValidationError as exc:
        diags += _pydantic_diagnostics(exc, smap)
        raw = None
    diags += _semantic_checks(data, smap, path.parent)
    diags.sort(key=sort_key)
    if raw is None or any(d.severity == "error" for d in diags):
        return None, diags, source
    return resolve(raw, path), diags, source


EXPECTED = {
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
    "dict_type": "a mapping of keys to values",
    "list_type": "a list",
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _pydantic_diagnostics(exc: ValidationError, smap: SourceMap) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    seen: set[tuple[Any, ...]] = set()
    errors = exc.errors()
    # A misspelled key also makes its correct spelling "missing": report the typo once, with the fix.
    suggested: set[tuple[Any, ...]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = _document_path(err["loc"], smap, False)
            close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc[:-1]), n=1, cutoff=0.6)
            suggested.update((*loc[:-1], c) for c in close)
    for err in errors:
        kind = err["type"]
        loc = _document_path(err["loc"], smap, kind == "missing")
        where = f" in {_dotted(loc[:-1])}" if len(loc) > 1 else " at top level"
        if (loc, kind == "missing") in seen or (kind == "missing" and loc in suggested):
            continue  # one message per place: a union reports each member's failure
        seen.add((loc, kind == "missing"))
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(loc[:-1])
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
            out.append(Diagnostic("E104", f"unknown key '{key}'{where}", *smap.key_span(loc), help=hint))
        elif kind == "missing":
            parent = loc[:-1]
            span = smap.key_span(parent) if parent else (0, 0)
            out.append(Diagnostic("E102", f"missing required key '{loc[-1]}'{where}", *span))
        elif kind in EXPECTED:
            message = f"'{_dotted(loc)}' should be {EXPECTED[kind]}, not {_describe(err.get('input'))}"
            out.append(Diagnostic("E101", message, *smap.value_span(loc)))
        else:
            out.append(Diagnostic("E103", f"invalid value for '{_dotted(loc)}': {err['msg']}", *smap.value_span(loc)))
    return out


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _document_path(loc: tuple[Any, ...], smap: SourceMap, missing: bool) -> tuple[Any, ...]:
    """The part of pydantic's location that names places in the document.

    Union errors add member labels ('str', 'dict[str,any]') that are not keys; a missing key is the
    one part that is not in the document yet still belongs in the path.
    """
    path: tuple[Any, ...] = ()
    for i, part in enumerate(loc):
        candidate = (*path, part)
        if candidate in smap.values or candidate in smap.keys or (missing and i == len(loc) - 1):
            path = candidate
    return path


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    model: Any = RawSpec
    for part in parent:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _semantic_checks(data: dict[str, Any], smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    """Cross-field rules, per section: a section that parsed is checked even when another did not."""
    out: list[Diagnostic] = []
    checks: dict[str, tuple[type[BaseModel], Any]] = {
        "task": (Task, _check_task),
        "inputs": (Inputs, _check_inputs),
        "teacher": (Teacher, _check_teacher),
        "student": (Student, _check_student),
        "export": (Export, _check_export),
    }
    sections: dict[str, Any] = {}
    for key, (model, check) in checks.items():
        try:
            sections[key] = model.model_validate(data.get(key))
        except ValidationError:
            continue  # already reported by the schema pass
        out += check(sections[key], smap, spec_dir)
    task, teacher = sections.get("task"), sections.get("teacher")
    with contextlib.suppress(ValidationError):  # an invalid deploy section is reported by the schema pass
        out += _check_cascade(Deploy.model_validate(data.get("deploy") or {}), teacher, smap)
    try:
        evaluation = Evaluation.model_validate(data.get("evaluation") or {})
        budget = Budget.model_validate(data.get("budget") or {})
    except ValidationError:
        return out
    kind = task_type(task.output.type) if task is not None else None
    if kind is not None and evaluation.metric != "auto" and evaluation.metric not in kind.metrics:
        offered = " or ".join(f"'{name}'" for name, other in TYPES.items() if evaluation.metric in other.metrics)
        out.append(
            Diagnostic(
                "E116",
                f"metric '{evaluation.metric}' needs output type {offered}, not '{task.output.type}'",
                *smap.value_span(("evaluation", "metric")),
                help="use " + ", ".join(f"'{name}'" for name in kind.metrics) + ", or 'auto'",
            )
        )
    if kind is not None and evaluation.agree_at is not None and not graded(kind.name, evaluation.metric):
        out.append(
            Diagnostic(
                "E134",
                "evaluation.agree_at applies to text tasks scored by chrf or rouge_l; here answers agree when "
                f"equal (output type '{task.output.type}', metric '{evaluation.metric}')",
                *smap.key_span(("evaluation", "agree_at")),
                help="remove agree_at, or score the text task with metric chrf or rouge_l",
            )
        )
    student = sections.get("student")
    if task is not None and student is not None and student.candidates and task.output.type != "label":
        out.append(
            Diagnostic(
                "E126",
                f"student.candidates {student.candidates} apply to output type 'label', not '{task.output.type}'",
                *smap.value_span(("student", "candidates")),
                help="remove student.candidates: a linear classifier answers with one of a label set",
            )
        )
    inputs = sections.get("inputs")
    wanted = {
        "reference": evaluation.reference == "gold",
        "max_gap_to_teacher": evaluation.max_gap_to_teacher is not None,
    }
    wants_gold = [name for name, on in wanted.items() if on]
    has_gold = inputs is not None and (
        inputs.gold is not None
        or any(s.gold_field for s in ([inputs.source] if inputs.source else inputs.sources or []))
    )
    if inputs is not None and wants_gold and not has_gold:
        out.append(
            Diagnostic(
                "E129",
                f"evaluation.{wants_gold[0]} needs human labels, and no input has one",
                *smap.key_span(("evaluation", wants_gold[0])),
                help="add gold_field to an inputs source, or inputs.gold: "
                "{path: gold.csv, field: text, gold_field: label}",
            )
        )
    if (
        teacher is not None
        and budget.max_usd
        and not (teacher.price_per_1m_tokens.input or teacher.price_per_1m_tokens.output)
    ):
        out.append(
            Diagnostic(
                "W122",
                "budget.max_usd is set but the teacher has no price, so nothing counts against it",
                *smap.key_span(("budget", "max_usd")),
                severity="warning",
                help="set teacher.price_per_1m_tokens: {input: ..., output: ...}",
            )
        )
    return out


# Where a field given to a type that does not take it is reported (codes kept from before types were records).
FOREIGN_FIELD = {"labels": ("E124", "labels"), "json_schema": ("E117", "schema")}


def _check_task(task: Task, smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    kind = task_type(task.output.type)
    out: list[Diagnostic] = []
    for attribute, (code, key) in FOREIGN_FIELD.items():
        if getattr(task.output, attribute) is not None and key not in kind.output_fields:
            out.append(
                Diagnostic(
                    code,
                    f"'{key}' only applies to output type {_types_taking(key)}, not '{task.output.type}'",
                    *smap.key_span(("task", "output", key)),
                )
            )
    for problem in kind.check(task.output, task.examples):
        span = smap.key_span(problem.path) if problem.at == "key" else smap.value_span(problem.path)
        out.append(Diagnostic(problem.code, problem.message, *span, help=problem.help))
    if len(task.examples) < 3:
        out.append(
            Diagnostic(
                "W120",
                f"only {len(task.examples)} example(s); 3-5 give the teacher a clearer task",
                *smap.key_span(("task", "examples")),
                severity="warning",
            )
        )
    return out


def _check_inputs(inputs: Inputs, smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    given = [name for name in ("source", "sources", "generate") if getattr(inputs, name) is not None]
    if len(given) != 1:
        return [
            Diagnostic(
                "E122",
                "inputs needs exactly one of 'source', 'sources' and 'generate'"
                + (f", not {' and '.join(given)}" if given else ""),
                *smap.key_span(("inputs",)),
                help="source: {path: data.jsonl, field: text}  or  generate: {count: 500}",
            )
        ]
    out = _check_gold(inputs.gold, smap, spec_dir) if inputs.gold is not None else []
    if inputs.source is not None:
        return out + _check_source(inputs.source, ("inputs", "source"), smap, spec_dir)
    return out + [
        d
        for n, source in enumerate(inputs.sources or [])
        for d in _check_source(source, ("inputs", "sources", n), smap, spec_dir)
    ]


def _check_gold(gold: Gold, smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    path = spec_dir / gold.path
    if path.suffix.lower() not in {".jsonl", ".csv", ".parquet"}:
        return [
            Diagnostic(
                "E114",
                f"gold labels are read from .jsonl, .csv or .parquet, not '{path.suffix or gold.path}'",
                *smap.value_span(("inputs", "gold", "path")),
            )
        ]
    if not path.is_file():
        return [
            Diagnostic(
                "E112",
                f"input file not found: {path}",
                *smap.value_span(("inputs", "gold", "path")),
                help="paths in a spec are relative to the spec file",
            )
        ]
    return []


# What each format needs beside `path`, and what only some formats use.
NEEDS_FIELD = {"jsonl", "csv", "parquet", "pairs"}
MESSAGE_FORMATS = {"openai_chat", "openai_batch", "chat_log"}


def _check_source(source: Source, at: tuple[str | int, ...], smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    src_path = spec_dir / source.path
    fmt = source_format(source)
    if fmt is None:
        out.append(
            Diagnostic(
                "E114",
                f"unsupported input file type '{src_path.suffix.lower() or source.path}'",
                *smap.value_span((*at, "path")),
                help="use one of: " + ", ".join(INPUT_FORMATS) + ", or name the file's `format`",
            )
        )
    elif not (src_path.is_file() or (fmt == "chat_log" and src_path.is_dir())):
        out.append(
            Diagnostic(
                "E112",
                f"input file not found: {src_path}",
                *smap.value_span((*at, "path")),
                help="paths in a spec are relative to the spec file",
            )
        )
    if fmt in NEEDS_FIELD and not source.field:
        out.append(
            Diagnostic(
                "E115",
                f"'{fmt}' inputs need 'field': the key or column holding the input",
                *smap.key_span(at),
            )
        )
    if fmt == "pairs" and src_path.suffix.lower() not in {".jsonl", ".csv", ".parquet"}:
        out.append(
            Diagnostic(
                "E114",
                f"'pairs' are read from .jsonl, .csv or .parquet, not '{src_path.suffix or source.path}'",
                *smap.value_span((*at, "path")),
            )
        )
    if fmt == "pairs" and not source.answer_field:
        out.append(
            Diagnostic(
                "E115", "'pairs' inputs need 'answer_field': the key or column holding the answer", *smap.key_span(at)
            )
        )
    if fmt == "openai_batch":
        if not source.output:
            out.append(
                Diagnostic(
                    "E115",
                    "'openai_batch' inputs need 'output': the Batch API's output file, joined by custom_id",
                    *smap.key_span(at),
                )
            )
        elif not (spec_dir / source.output).is_file():
            out.append(
                Diagnostic(
                    "E112",
                    f"input file not found: {spec_dir / source.output}",
                    *smap.value_span((*at, "output")),
                    help="paths in a spec are relative to the spec file",
                )
            )
    unused = {
        "answer_field": fmt != "pairs",
        "output": fmt != "openai_batch",
        "extract": fmt not in MESSAGE_FORMATS,
        "field": fmt in MESSAGE_FORMATS or fmt == "txt",
        "reask_invalid": fmt in BARE,
        "gold_field": fmt == "txt",
    }
    for name, not_used in unused.items():
        if fmt is not None and not_used and getattr(source, name) not in (None, False):
            out.append(
                Diagnostic(
                    "E127",
                    f"'{name}' is not used by format '{fmt}'",
                    *smap.key_span((*at, name)),
                    help="remove it, or name the format that uses it",
                )
            )
    if source.extract is not None:
        try:
            pattern = re.compile(source.extract)
        except re.error as exc:
            out.append(
                Diagnostic("E128", f"extract is not a regular expression: {exc}", *smap.value_span((*at, "extract")))
            )
        else:
            if "input" not in pattern.groupindex:
                out.append(
                    Diagnostic(
                        "E128",
                        "extract has no group named 'input'",
                        *smap.value_span((*at, "extract")),
                        help="name the part that is the bare input: 'Ticket:\\n(?P<input>.*)'",
                    )
                )
    return out


BARE = set(INPUT_FORMATS.values())


def source_format(source: Source) -> str | None:
    """The format a source is read in: named, or (bare inputs) from the file's extension."""
    return source.format or INPUT_FORMATS.get(Path(source.path).suffix.lower())


def table_format(path: Path) -> str:
    """How a table of inputs and answers (pairs, gold labels) is read, from its extension."""
    return {".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower(), "jsonl")


def source_files(path: Path) -> list[Path]:
    """The files a source reads: the file itself, or a folder's .jsonl files (chat_log captures) in name order."""
    return sorted(path.glob("*.jsonl")) if path.is_dir() else [path]


def source_sha256(path: Path) -> str:
    """What a source holds, whatever it is called: a file's sha256, or one over a folder's names and files'."""
    if not path.is_dir():
        return file_sha256(path)
    listing = "".join(f"{p.name}\t{file_sha256(p)}\n" for p in source_files(path))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _check_student(student: Student, smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    if student.lora is not None and student.method != "lora":
        return [
            Diagnostic(
                "E120",
                f"'lora' settings apply to method 'lora', but method is '{student.method}'",
                *smap.key_span(("student", "lora")),
                help="add `method: lora`, or remove the lora settings",
            )
        ]
    return []


def _check_export(export: Export, smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    variants = export.quantization
    repeated = sorted({v for v in variants if variants.count(v) > 1})
    if repeated:
        return [
            Diagnostic(
                "E121",
                f"quantization variant listed twice: {', '.join(repeated)}",
                *smap.value_span(("export", "quantization")),
            )
        ]
    return []


def _check_teacher(teacher: Teacher, smap: SourceMap, spec_dir: Path) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    if teacher.provider == "local" and teacher.base_url:
        out.append(
            Diagnostic(
                "E119",
                "'base_url' applies to provider 'openai' only; a 'local' teacher runs in this process",
                *smap.key_span(("teacher", "base_url")),
            )
        )
    if teacher.provider == "openai" and teacher.base_url is not None and (problem := _url_problem(teacher.base_url)):
        out.append(
            Diagnostic(
                "E125",
                f"'base_url' {problem}",
                *smap.value_span(("teacher", "base_url")),
                help="an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1; the key goes in the variable "
                "that api_key_env names",
                mask="@" in teacher.base_url or "?" in teacher.base_url,
            )
        )
    if teacher.provider == "local" and teacher.batch:
        out.append(
            Diagnostic(
                "E123",
                "'batch' applies to provider 'openai' only; a 'local' teacher batches in this process",
                *smap.key_span(("teacher", "batch")),
                help="remove `batch: true`, or use an OpenAI endpoint that serves the Batch API",
            )
        )
    out += _key_variable_problems(teacher.api_key_env, ("teacher", "api_key_env"), smap)
    return out


def _key_variable_problems(env: str, at: tuple[str, ...], smap: SourceMap) -> list[Diagnostic]:
    """E113 when an api_key_env is not a variable's name, without echoing one that looks like a key."""
    if SECRET_LIKE.search(env):
        return [
            Diagnostic(
                "E113",
                "'api_key_env' must be the NAME of an environment variable, and this value looks like a key",
                *smap.value_span(at),
                help="put the key in a variable, e.g. OPENAI_API_KEY, and write its name here",
                mask=True,
            )
        ]
    if not ENV_NAME.match(env):
        return [
            Diagnostic(
                "E113",
                f"'api_key_env' must be the name of an environment variable, not {env!r}",
                *smap.value_span(at),
                help="letters, digits and underscores, e.g. OPENAI_API_KEY",
            )
        ]
    return []


def _check_cascade(deploy: Deploy, teacher: Teacher | None, smap: SourceMap) -> list[Diagnostic]:
    """The cascade's teacher must be an endpoint the package can call, named without a key, and answer
    within the request's own deadline."""
    cascade = deploy.cascade
    if cascade is None:
        if deploy.shadow_share:
            return [
                Diagnostic(
                    "E133",
                    "deploy.shadow_share needs deploy.cascade: shadowed requests go to the cascade's teacher",
                    *smap.key_span(("deploy", "shadow_share")),
                    help="add deploy.cascade (its min_agreement and teacher), or remove shadow_share",
                )
            ]
        return []
    at = ("deploy", "cascade", "teacher")
    own = cascade.teacher
    out: list[Diagnostic] = []
    if teacher is not None and teacher.provider == "local" and not (own.base_url and own.model):
        out.append(
            Diagnostic(
                "E131",
                "deploy.cascade.teacher needs base_url and model: the build's teacher runs in process, and the "
                "package can only hand requests to an endpoint",
                *smap.key_span(("deploy", "cascade")),
                help="e.g. teacher: {base_url: http://teacher:8000/v1, model: my-model, api_key_env: TEACHER_KEY}",
            )
        )
    if own.base_url is not None and (problem := _url_problem(own.base_url)):
        out.append(
            Diagnostic(
                "E125",
                f"'base_url' {problem}",
                *smap.value_span((*at, "base_url")),
                help="an http(s) URL with a host; the key goes in the variable that api_key_env names",
                mask="@" in own.base_url or "?" in own.base_url,
            )
        )
    if own.api_key_env is not None:
        out += _key_variable_problems(own.api_key_env, (*at, "api_key_env"), smap)
    if own.timeout_s >= deploy.request_timeout_s:
        out.append(
            Diagnostic(
                "E132",
                f"deploy.cascade.teacher.timeout_s {own.timeout_s:g} is not within deploy.request_timeout_s "
                f"{deploy.request_timeout_s:g}: a slow teacher would time the request out instead of falling back "
                "to the student's answer",
                *smap.value_span((*at, "timeout_s")) if "timeout_s" in own.model_fields_set else smap.key_span(at[:2]),
                help="lower the teacher's timeout_s, or raise deploy.request_timeout_s",
            )
        )
    return out


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be a teacher endpoint, without quoting it (it may hold a key)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return f"must be an http or https URL, not {parts.scheme or 'one without a scheme'}"[:80]
    if parts.username or parts.password or "@" in parts.netloc:
        return "must not hold credentials (user:key@host): they would be logged and stored with the build"
    if key_like(parts.query):
        return "must not hold a key in its query string: it would be logged and stored with the build"
    if not parts.hostname:
        return "has no host"
    return None


def _canonical_output(output: Any) -> str:
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, separators=(",", ":"))


def resolve(raw: RawSpec, spec_path: Path) -> ir.SpecIR:
    """The only place raw becomes IR."""
    spec_path = spec_path.resolve()
    t = raw.teacher
    s = raw.student
    return ir.SpecIR(
        name=raw.name,
        spec_path=str(spec_path),
        task=ir.TaskIR(
            instructions=raw.task.instructions.strip(),
            examples=tuple(ir.ExampleIR(e.input, _canonical_output(e.output)) for e in raw.task.examples),
            output_type=raw.task.output.type,
            labels=tuple(raw.task.output.labels or ()),
            # Key order kept: a schema's `properties` order is the order constrained decoding writes them in.
            json_schema=json.dumps(raw.task.output.json_schema) if raw.task.output.json_schema else "",
        ),
        inputs=_inputs(raw, spec_path.parent),
        teacher=ir.TeacherIR(
            provider=t.provider,
            model=_resolve_model_ref(t.model, spec_path.parent) if t.provider == "local" else t.model,
            base_url=t.base_url or "",
            temperature=t.temperature,
            max_tokens=t.max_tokens,
            api_key_env=t.api_key_env,
            max_concurrency=t.max_concurrency,
            requests_per_minute=t.requests_per_minute or 0,
            tokens_per_minute=t.tokens_per_minute or 0,
            max_failed_share=t.max_failed_share,
            timeout_s=t.timeout_s,
            max_retries=t.max_retries,
            price_input_per_1m=t.price_per_1m_tokens.input,
            price_output_per_1m=t.price_per_1m_tokens.output,
            batch=t.batch,
            batch_poll_s=t.batch_poll_s,
        ),
        student=ir.StudentIR(
            base_model=_resolve_model_ref(s.base_model, spec_path.parent),
            method=s.method,
            lora=_lora(s.lora or Lora()) if s.method == "lora" else None,
            prune=ir.PruneIR(
                candidates=tuple(sorted(set(s.prune.candidates), reverse=True)),
                extra_inputs=s.prune.extra_inputs,
                kd_weight=s.prune.kd_weight,
                epochs=s.prune.epochs or s.epochs,
            )
            if s.prune
            else None,
            candidates=tuple(dict.fromkeys(s.candidates)),
            epochs=s.epochs,
            learning_rate=s.learning_rate,
            batch_size=s.batch_size,
            max_seq_len=None if s.max_seq_len == "auto" else s.max_seq_len,
            seed=s.seed,
            grad_accumulation=s.grad_accumulation,
            packing=s.packing,
            dev_share=s.dev_share,
            patience=s.patience,
            checkpoint_every=s.checkpoint_every,
            devices=s.devices,
            soft_label_weight=s.soft_label_weight,
        ),
        evaluation=ir.EvaluationIR(
            holdout=raw.evaluation.holdout,
            metric=task_type(raw.task.output.type).metrics[0]
            if raw.evaluation.metric == "auto"
            else raw.evaluation.metric,
            min_score=raw.evaluation.min_score,
            gate=raw.evaluation.gate,
            reference=raw.evaluation.reference,
            max_gap_to_teacher=-1.0 if raw.evaluation.max_gap_to_teacher is None else raw.evaluation.max_gap_to_teacher,
            max_answer_share=raw.evaluation.max_answer_share,
            agree_at=_agree_at(raw),
        ),
        export=ir.ExportIR(
            quantization=tuple(raw.export.quantization),
            target=raw.export.target,
            max_quality_drop=raw.export.max_quality_drop,
        ),
        deploy=ir.DeployIR(
            max_new_tokens=raw.deploy.max_new_tokens,
            latency_p50_ms=raw.deploy.latency_budget_ms.p50 or 0.0,
            latency_p95_ms=raw.deploy.latency_budget_ms.p95 or 0.0,
            port=raw.deploy.port,
            max_batch_size=raw.deploy.max_batch_size,
            max_request_bytes=raw.deploy.max_request_bytes,
            max_queue=raw.deploy.max_queue,
            request_timeout_s=raw.deploy.request_timeout_s,
            header_timeout_s=raw.deploy.header_timeout_s,
            max_connections=raw.deploy.max_connections,
            max_input_tokens=raw.deploy.max_input_tokens,
            selftest_inputs=raw.deploy.selftest_inputs,
            cascade=_cascade(raw),
            shadow_share=raw.deploy.shadow_share,
            usd_per_hour=raw.deploy.usd_per_hour or 0.0,
        ),
        budget=ir.BudgetIR(max_usd=raw.budget.max_usd or 0.0),
    )


def _inputs(raw: RawSpec, spec_dir: Path) -> ir.InputsIR:
    generate = raw.inputs.generate
    given = [raw.inputs.source] if raw.inputs.source is not None else raw.inputs.sources
    if given:
        sources = [_source(source, spec_dir) for source in given]
        answered_first = sorted(sources, key=lambda s: not s.answered)  # stable: the spec's order otherwise
        return ir.InputsIR(
            mode="source", sources=tuple(answered_first), dedup=raw.inputs.dedup, gold=_gold(raw, spec_dir)
        )
    assert generate is not None  # exactly one of the two: checked before resolving
    per_request = generate.per_request
    return ir.InputsIR(
        mode="generate",
        dedup=raw.inputs.dedup,
        gold=_gold(raw, spec_dir),
        generate=ir.GenerateIR(
            count=generate.count,
            seed=generate.seed,
            guidance=(generate.guidance or "").strip(),
            per_request=per_request,
            max_requests=generate.max_requests or 3 * -(-generate.count // per_request),
            temperature=generate.temperature,
            teacher_provider=raw.teacher.provider,
            teacher_model=raw.teacher.model,
            teacher_base_url=raw.teacher.base_url or "",
            instructions=raw.task.instructions.strip(),
            example_inputs=tuple(e.input for e in raw.task.examples),
        ),
    )


def _gold(raw: RawSpec, spec_dir: Path) -> ir.GoldIR | None:
    gold = raw.inputs.gold
    if gold is None:
        return None
    path = (spec_dir / gold.path).resolve()
    return ir.GoldIR(str(path), file_sha256(path), table_format(path), gold.field, gold.gold_field)


def _source(source: Source, spec_dir: Path) -> ir.SourceIR:
    src = (spec_dir / source.path).resolve()
    output = (spec_dir / source.output).resolve() if source.output else None
    return ir.SourceIR(
        path=str(src),
        sha256=source_sha256(src),
        format=source_format(source) or "",
        field=source.field or "",
        limit=source.limit or 0,
        answer_field=source.answer_field or "",
        extract=source.extract or "",
        output_path=str(output or ""),
        output_sha256=file_sha256(output) if output else "",
        reask_invalid=source.reask_invalid,
        gold_field=source.gold_field or "",
    )


OPENAI_BASE_URL = "https://api.openai.com/v1"


def _agree_at(raw: RawSpec) -> float:
    """The score at which a graded text answer agrees with the teacher's; 1.0 where answers must be equal."""
    if not graded(raw.task.output.type, raw.evaluation.metric):
        return 1.0
    return DEFAULT_AGREE_AT if raw.evaluation.agree_at is None else raw.evaluation.agree_at


def _cascade(raw: RawSpec) -> ir.CascadeIR | None:
    cascade = raw.deploy.cascade
    if cascade is None:
        return None
    own, teacher = cascade.teacher, raw.teacher
    inherited = teacher.base_url if teacher.provider == "openai" else None
    return ir.CascadeIR(
        min_agreement=cascade.min_agreement,
        min_coverage=cascade.min_coverage,
        base_url=own.base_url or inherited or OPENAI_BASE_URL,
        model=own.model or teacher.model,
        api_key_env=own.api_key_env or teacher.api_key_env,
        timeout_s=own.timeout_s,
        max_retries=own.max_retries,
    )


def _lora(lora: Lora) -> ir.LoraIR:
    return ir.LoraIR(lora.r, lora.alpha, lora.dropout, tuple(lora.target_modules or ()))


def _resolve_model_ref(ref: str, spec_dir: Path) -> str:
    """A path relative to the spec becomes absolute; an HF id or a built-in name stays as written."""
    if ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or (spec_dir / ref).exists():
        return str((spec_dir / Path(ref).expanduser()).resolve())
    return ref


def _types_taking(key: str) -> str:
    return " or ".join(f"'{name}'" for name, kind in TYPES.items() if key in kind.output_fields)
