"""report.html: one self-contained page rendered from report.json (no script, no network, charts inline)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from distillc.build.artifacts import read_json, write_text_atomic
from distillc.report import charts
from distillc.report.headline import usd_text

HTML = "report.html"


def write_html(build_dir: Path) -> Path:
    """Render `build_dir`/report.json into `build_dir`/report.html (written whole, then renamed)."""
    target = build_dir / HTML
    write_text_atomic(target, render_html(read_json(build_dir / "report.json")))
    return target


def render_html(report: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("distillc.templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=True,  # inputs and answers are user text
    )
    env.filters["usd"] = usd_text
    return env.get_template("report.html.j2").render(r=report, charts=_charts(report), sections=sections(report))


# (id, title, the report key it shows; "" for one every report has), in page order.
SECTIONS = (
    ("headline", "Student vs teacher", "headline"),
    ("data", "Data", "inputs"),
    ("teacher", "Teacher tokens and dollars", "label"),
    ("training", "Training", "train"),
    ("quality", "Quality", "evaluation"),
    ("variants", "Export variants", "verify"),
    ("stages", "Stages", ""),
)


def sections(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, title) of each section the report has data for, in page order."""
    return [(name, title) for name, title, key in SECTIONS if not key or report.get(key)]


def _charts(report: dict[str, Any]) -> dict[str, Markup]:
    out: dict[str, str] = {}
    if head := report.get("headline"):
        teacher, student = head["teacher"], head["student"]
        if teacher["p50_ms"]:
            out["latency"] = charts.bars(["teacher", "student"], [teacher["p50_ms"], student["p50_ms"]], "ms", 1)
        if teacher["usd_per_1k"] is not None and student["usd_per_1k"] is not None:
            costs = [teacher["usd_per_1k"], student["usd_per_1k"]]
            out["cost"] = charts.bars(["teacher", "student"], costs, "$", 1)
    if distribution := (report.get("label") or {}).get("distribution"):
        out["distribution"] = charts.bars(list(distribution), list(distribution.values()), "")
    if (train := report.get("train")) and train.get("step_loss"):
        out["training"] = charts.training_curve(train["step_loss"], train.get("dev_loss", []), train.get("best_step"))
    if confusion := ((report.get("evaluation") or {}).get("metrics") or {}).get("confusion"):
        out["confusion"] = charts.confusion(confusion["labels"], confusion["matrix"])
    if (verify := report.get("verify")) and (gate := report.get("gate")):
        measured = [v for v in verify["variants"] if v.get("p50_ms") is not None]
        out["variants"] = charts.variants(measured, verify["metric"], gate["variant"])
    if built := report.get("built_s"):
        out["stages"] = charts.bars(list(built), list(built.values()), "s")
    return {name: Markup(svg) for name, svg in out.items()}  # our own SVG, not user text
