"""Render the emitted files from templates/: Python decides, templates only substitute."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import jinja2


def render(template: str, **values: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("distillc.templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(template).render(**values)


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~!])")


def markdown_text(text: str) -> str:
    """`text` from the spec as plain text in Markdown: on one line (a README list item stays one item, and
    no line can open a code fence), with the characters Markdown or HTML would read escaped."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def markdown_code(text: str) -> str:
    """`text` as an inline code span, however many backticks it holds."""
    text = " ".join(text.split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"
