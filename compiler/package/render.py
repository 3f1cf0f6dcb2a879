"""Render the emitted files from templates/: Python decides, templates only substitute."""

from __future__ import annotations

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
