"""`distillc compare OUT_A OUT_B`: how two builds differ, read from their report.json files.

First the spec fields that changed (each report records the whole resolved spec it was built from), then,
side by side: data counts, quality with its 95% interval, latency, size, cost and build time. Two scores
whose intervals overlap are marked so: on held-out sets this small the difference may be noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillc.build.artifacts import read_json
from distillc.errors import DistillcError
from distillc.report.headline import usd_text


@dataclass(frozen=True)
class Measure:
    section: str
    name: str
    path: str  # where the report holds it, dotted
    kind: str  # how it reads: count, score, ms, mb, usd, s, text


MEASURES = (
    Measure("data", "inputs read", "inputs.read", "count"),
    Measure("data", "inputs kept", "inputs.kept", "count"),
    Measure("data", "duplicates dropped", "inputs.duplicates", "count"),
    Measure("data", "near duplicates dropped", "inputs.near_duplicates", "count"),
    Measure("data", "distinct word pairs", "inputs.distinct_2", "ratio"),
    Measure("data", "labeled", "label.labeled", "count"),
    Measure("data", "dead letters", "label.dead_letter", "count"),
    Measure("data", "train / held-out", "split", "text"),
    Measure("latency", "student p50", "headline.student.p50_ms", "ms"),
    Measure("latency", "student p95", "headline.student.p95_ms", "ms"),
    Measure("latency", "teacher p50", "headline.teacher.p50_ms", "ms"),
    Measure("size", "shipped variant", "gate.variant", "text"),
    Measure("size", "package", "package.bytes", "mb"),
    Measure("size", "build folder", "folder.bytes", "mb"),
    Measure("cost", "student $ per 1,000", "headline.student.usd_per_1k", "usd"),
    Measure("cost", "teacher $ per 1,000", "headline.teacher.usd_per_1k", "usd"),
    Measure("cost", "teacher $ spent", "label.usd", "usd"),
    Measure("time", "build (every stage as made)", "built_s", "s"),
    Measure("time", "train", "built_s.train", "s"),
)


def read_report(folder: Path) -> dict[str, Any]:
    path = folder / "report.json"
    if not path.is_file():
        raise DistillcError(
            "E204",
            f"{folder} holds no build report (no report.json)",
            help="compare two build folders: `distillc build SPEC --out FOLDER` writes one",
        )
    try:
        report = read_json(path)
    except (UnicodeDecodeError, ValueError) as error:
        raise DistillcError(
            "E204", f"{path} is not a readable build report ({error})", help="rebuild the folder to write it again"
        ) from None
    if not isinstance(report, dict):
        raise DistillcError("E204", f"{path} is not a build report (not a JSON object)", help="rebuild the folder")
    return report


def compare(folder_a: Path, folder_b: Path) -> dict[str, Any]:
    """{"a", "b": the folders, "spec": [{field, a, b}] changed, "rows": [{section, name, a, b, change, note}]}."""
    a, b = read_report(folder_a), read_report(folder_b)
    rows = quality_rows(a, b) + other_rows(a, b)
    return {"a": str(folder_a), "b": str(folder_b), "spec": spec_changes(a, b), "rows": rows}


def spec_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Each spec field whose value differs, dotted; None when a report does not record its spec."""
    if "spec" not in a or "spec" not in b:
        return None
    flat_a, flat_b = flatten(a["spec"]), flatten(b["spec"])
    return [
        {"field": name, "a": flat_a.get(name), "b": flat_b.get(name)}
        for name in sorted(flat_a.keys() | flat_b.keys())
        if flat_a.get(name) != flat_b.get(name) and name != "spec_path"
    ]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists stay whole (a changed example list is one change)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def quality_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The shipped student's score, then each metric of the PyTorch student (before export) on held-out inputs."""
    rows = []
    head_a, head_b = a.get("headline") or {}, b.get("headline") or {}
    if head_a or head_b:
        metrics = [head.get("metric") for head in (head_a, head_b) if head]
        named = metrics[0] if len(set(metrics)) == 1 else " vs ".join(metrics)
        rows.append(score_row("quality", f"shipped, {named}", head_a.get("student"), head_b.get("student")))
    metrics_a = dig(a, "evaluation.metrics") or {}
    metrics_b = dig(b, "evaluation.metrics") or {}
    for name in [*metrics_a, *(m for m in metrics_b if m not in metrics_a)]:
        pair = metrics_a.get(name), metrics_b.get(name)
        if all(m is None or "interval" in m for m in pair):  # per-label and per-field tables are not scores
            scores = (None if m is None else {"score": m["value"], **m} for m in pair)
            rows.append(score_row("quality before export", name, *scores))
    return rows


def score_row(section: str, name: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    values = [None if s is None else {"value": s["score"], "interval": s["interval"]} for s in (a, b)]
    row = {"section": section, "name": name, "a": values[0], "b": values[1], "change": "", "note": ""}
    if values[0] and values[1]:
        row["change"] = f"{values[1]['value'] - values[0]['value']:+.3f}"
        (low_a, high_a), (low_b, high_b) = values[0]["interval"], values[1]["interval"]
        row["note"] = "intervals overlap" if low_a <= high_b and low_b <= high_a else "intervals apart"
    return row


def other_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for measure in MEASURES:
        value_a, value_b = measured(a, measure), measured(b, measure)
        if value_a is None and value_b is None:
            continue
        rows.append(
            {
                "section": measure.section,
                "name": measure.name,
                "a": value_a,
                "b": value_b,
                "kind": measure.kind,
                "change": change(value_a, value_b, measure.kind),
                "note": "",
            }
        )
    return rows


def measured(report: dict[str, Any], measure: Measure) -> Any:
    value = dig(report, measure.path)
    if measure.path == "split" and value:
        return f"{value['train']} / {value['holdout']}"
    if isinstance(value, list):  # dead letters: the inputs themselves
        return len(value)
    if isinstance(value, dict):  # built_s: every stage's time
        return round(sum(value.values()), 1)
    return value


def change(a: Any, b: Any, kind: str) -> str:
    if kind == "text" or not isinstance(a, int | float) or not isinstance(b, int | float):
        return "" if a == b else "changed"
    if a == b:
        return ""
    if kind == "count":
        return f"{b - a:+,}"
    if kind == "ratio":
        return f"{b - a:+.3f}"
    return f"{(b - a) / a:+.0%}" if a else ""


def dig(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


FORMATS: dict[str, Callable[[Any], str]] = {
    "count": lambda v: f"{v:,}",
    "ratio": lambda v: f"{v:.3f}",
    "ms": lambda v: f"{v:.1f} ms",
    "mb": lambda v: f"{v / 1e6:.1f} MB",
    "usd": usd_text,
    "s": lambda v: f"{v:.0f} s",
    "text": str,
}


def shown(value: Any, kind: str = "text") -> str:
    if value is None:
        return "-"
    if kind == "score":
        low, high = value["interval"]
        return f"{value['value']:.3f} [{low:.3f}, {high:.3f}]"
    if kind == "spec":
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 40 else text[:39] + "…"
    return FORMATS[kind](value)


def render(result: dict[str, Any]) -> str:
    """The comparison as text: a table of spec changes, then one of measures, each by section."""
    lines = [f"A: {result['a']}", f"B: {result['b']}", ""]
    if result["spec"]:
        table = [("spec field", "A", "B", "")]
        table += [(c["field"], shown(c["a"], "spec"), shown(c["b"], "spec"), "") for c in result["spec"]]
    else:
        table = [("spec", "the same" if result["spec"] == [] else "not recorded by both builds", "", "")]
    lines += columns(table) + [""]
    table = [("", "A", "B", "change")]
    section = ""
    for row in result["rows"]:
        if row["section"] != section:
            section = row["section"]
            table.append((section, "", "", ""))
        kind = row.get("kind", "score")
        change_text = f"{row['change']}  {row['note']}".strip()
        table.append(("  " + row["name"], shown(row["a"], kind), shown(row["b"], kind), change_text))
    return "\n".join(lines + columns(table))


def columns(rows: list[tuple[str, str, str, str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
