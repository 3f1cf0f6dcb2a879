"""The report's charts, drawn with matplotlib as inline SVG: text stays text, ids are stable from build to build."""

from __future__ import annotations

import io
import re
from typing import Any

from distillc.report.headline import usd_text

BLUE, ORANGE, GREY = "#3465a4", "#f57900", "#888a85"


def _figure(width: float, height: float) -> Any:
    import matplotlib

    # text.parse_math off: labels and names are text, never TeX (a label like "$\\frac{$" would not render).
    settings = {"svg.fonttype": "none", "svg.hashsalt": "distillc", "font.size": 9, "text.parse_math": False}
    matplotlib.rcParams.update(settings)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.add_subplot()


def _svg(figure: Any) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = out.getvalue()
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # RDF boilerplate
    return text[text.index("<svg") :]  # inline: no XML declaration or doctype


def bars(labels: list[str], values: list[float], unit: str, highlight: int | None = None) -> str:
    """Horizontal bars, one per label, with the value written at the end of each."""
    figure, ax = _figure(6, 0.35 * len(labels) + 0.6)
    colors = [ORANGE if i == highlight else BLUE for i in range(len(labels))]
    drawn = ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    text = usd_text if unit == "$" else (lambda v: f"{v:,.4g} {unit}".strip())
    ax.bar_label(drawn, labels=[text(v) for v in values[::-1]], padding=3)
    ax.set_xlim(0, max(values or [1]) * 1.3 or 1)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def training_curve(step_loss: list[float], dev_loss: list[list[float]], best_step: int | None) -> str:
    figure, ax = _figure(6, 2.6)
    ax.plot(range(1, len(step_loss) + 1), step_loss, color=BLUE, linewidth=1, label="training loss (per step)")
    if dev_loss:
        steps, losses = zip(*dev_loss, strict=True)
        ax.plot(steps, losses, "o-", color=ORANGE, markersize=4, label="dev loss")
    if best_step:
        ax.axvline(best_step, color=GREY, linestyle=":", label=f"best step ({best_step}): kept")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def confusion(labels: list[str], matrix: list[list[int]]) -> str:
    size = 1.2 + 0.45 * len(labels)
    figure, ax = _figure(size + 1, size)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("student")
    ax.set_ylabel("teacher")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _svg(figure)


def variants(rows: list[dict[str, Any]], metric: str, shipped: str) -> str:
    """Each exported variant: p50 latency against its score, the shipped one marked."""
    figure, ax = _figure(6, 2.8)
    for row in rows:
        chosen = row["name"] == shipped
        ax.errorbar(
            row["p50_ms"],
            row["score"],
            yerr=[[row["score"] - row["interval"][0]], [row["interval"][1] - row["score"]]],
            fmt="o",
            color=ORANGE if chosen else BLUE,
            capsize=3,
        )
        ax.annotate(
            f"{row['name']} ({row['bytes'] / 1e6:.0f} MB)",
            (row["p50_ms"], row["score"]),
            (6, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("p50 latency, ms (lower is better)")
    ax.set_ylabel(f"{metric} vs teacher")
    ax.set_xlim(left=0)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(figure)
