"""Property: any mutation of a valid spec is either valid or gets diagnostics with a position; never an exception."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillc.spec import validate_file
from distillc.spec.diagnostics import line_col, render_all, to_json
from tests.conftest import VALID

BASE: dict[str, Any] = yaml.safe_load(VALID)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=60),
    st.text(
        alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=20
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*prefix, i))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        targets = paths(doc)
        if not targets:
            break
        path = draw(st.sampled_from(targets))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["delete", "replace", "add_key", "nest"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "add_key" and isinstance(parent, dict):
            parent[draw(st.text(max_size=15))] = draw(values)
        elif action == "nest":
            value: Any = parent[path[-1]]
            for _ in range(draw(st.integers(1, 40))):
                value = {"x": value}
            parent[path[-1]] = value
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    lines = text.splitlines(keepends=True)
    edit = draw(st.sampled_from(["none", "duplicate_line", "insert_text", "anchor_alias", "truncate"]))
    if edit == "duplicate_line" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif edit == "insert_text":
        i = draw(st.integers(0, len(lines)))
        lines.insert(i, draw(st.text(max_size=30)) + "\n")
    elif edit == "anchor_alias":
        lines = [f"x-shared: &shared {draw(st.sampled_from(['[1, 2]', '{a: 1}', 'text']))}\n", *lines]
        lines.append("extra: *shared\n")
    elif edit == "truncate" and lines:
        lines = lines[: draw(st.integers(0, len(lines)))]
    return "".join(lines)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=mutated_documents())
def test_mutated_specs_are_valid_or_diagnosed_never_crash(tmp_path: Path, document: str) -> None:
    (tmp_path / "inputs.txt").write_text("one\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(document, encoding="utf-8")
    spec, diagnostics, source = validate_file(spec_file)
    errors = [d for d in diagnostics if d.severity == "error"]
    assert (spec is None) == bool(errors)
    for d in diagnostics:
        assert 0 <= d.start <= len(source) and d.start <= d.end
        line, col = line_col(source, d.start)
        assert line >= 1 and col >= 1
    render_all(diagnostics, source, "spec.yaml")
    json.loads(to_json(diagnostics, source, "spec.yaml"))


@st.composite
def bombs(draw: st.DrawFn) -> tuple[str, bool]:
    """The valid spec with a document bomb added: a large string aliased many times, nested aliases
    ("billion laughs"), or flow or block nesting hundreds of levels deep; and whether it passes a cap."""
    from distillc.spec.source import MAX_BYTES, MAX_DEPTH, MAX_NODES

    kind = draw(st.sampled_from(["aliased text", "laughs", "flow nesting", "block nesting"]))
    if kind == "aliased text":
        size, count = draw(st.integers(1_000, 1_000_000)), draw(st.integers(10, 5_000))
        bomb = f'x-bomb: {{a: &a "{"x" * size}", b: [{", ".join(["*a"] * count)}]}}\n'
        over = size * (count + 1) > MAX_BYTES
    elif kind == "laughs":
        levels, fanout = draw(st.integers(3, 12)), draw(st.integers(2, 12))
        rows = ["x-l0: &l0 [lol]"]
        rows += [f"x-l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels)]
        bomb = "\n".join(rows) + "\n"
        over = fanout ** (levels - 1) > MAX_NODES
    elif kind == "flow nesting":
        depth = draw(st.integers(30, 3_000))
        bomb = "x-deep: " + draw(st.sampled_from(["[", "{a: "])) * depth + "\n"  # unclosed: E100 within the cap
        over = depth > MAX_DEPTH
    else:
        depth = draw(st.integers(30, 1_500))
        bomb = "x-deep:\n" + "".join(" " * (i + 1) + "k:\n" for i in range(depth)) + " " * (depth + 1) + "v\n"
        over = depth > MAX_DEPTH
    return (VALID + bomb if draw(st.booleans()) else bomb + VALID), over


def memory_cap(extra_bytes: int) -> tuple[int, int]:
    """Cap this process's data segment at what it uses now plus `extra_bytes`; returns the old limit."""
    import resource

    status = Path("/proc/self/status").read_text()
    used = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmData:"))) * 1024
    old = resource.getrlimit(resource.RLIMIT_DATA)
    hard = old[1]
    cap = used + extra_bytes if hard == resource.RLIM_INFINITY else min(used + extra_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    return old


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bomb=bombs())
def test_document_bombs_get_a_located_error_within_a_memory_cap(tmp_path: Path, bomb: tuple[str, bool]) -> None:
    """A bomb past a cap is refused (E106) with a position, in bounded memory (an allocation past the
    memory cap would raise MemoryError and fail the test), and its diagnostic stays short; a smaller one
    is valid or diagnosed, never a crash."""
    document, over = bomb
    import resource

    (tmp_path / "inputs.txt").write_text("one\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(document, encoding="utf-8")
    old = memory_cap(512 * 1024 * 1024)
    try:
        spec, diagnostics, source = validate_file(spec_file)
        rendered = render_all(diagnostics, source, "spec.yaml")
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, old)
    if over:
        assert spec is None and any(d.code == "E106" for d in diagnostics), [d.code for d in diagnostics]
    for d in diagnostics:
        assert 0 <= d.start <= len(source) and d.start <= d.end
    assert len(rendered) < 20_000
