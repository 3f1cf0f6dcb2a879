"""Load YAML keeping where every key and value came from, so errors can point at the exact spot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from distillc.spec.diagnostics import Diagnostic

Path = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Spans of values and of keys, by their path in the document (('teacher', 'model'), ...)."""

    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def value_span(self, path: Path) -> tuple[int, int]:
        """Span of the value at `path`, or of its nearest existing ancestor."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return (0, 0)

    def key_span(self, path: Path) -> tuple[int, int]:
        return self.keys.get(path) or self.value_span(path)


def load_yaml(source: str) -> tuple[Any, SourceMap, list[Diagnostic]]:
    """Parse `source`; on a syntax error return (None, empty map, [diagnostic])."""
    smap = SourceMap()
    diagnostics: list[Diagnostic] = []
    help = "a spec is a small file; aliases that expand into huge or endless trees are refused"
    too_deep = f"the spec nests deeper than {MAX_DEPTH} levels"
    if (deep := _flow_too_deep(source)) is not None:  # before the parser, which recurses once per level
        return None, smap, [Diagnostic("E106", too_deep, deep, deep + 1)]
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        if node is None:
            return None, smap, [Diagnostic("E108", "the spec is empty", 0, 1)]
        data = _convert(node, (), smap, diagnostics, [MAX_NODES, MAX_BYTES])
    except RecursionError:  # block nesting deep enough to exhaust the parser's recursion
        return None, smap, [Diagnostic("E106", too_deep, 0, 1, help=help)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = mark.index if mark else 0
        return None, smap, [Diagnostic("E100", f"invalid YAML: {exc.problem or exc.context}", at, at + 1)]
    except yaml.reader.ReaderError as exc:
        at = exc.position
        message = f"invalid YAML: character U+{exc.character:04X} is not allowed in a YAML file"
        return None, smap, [Diagnostic("E100", message, at, at + 1)]
    except _TooLarge as exc:
        at = exc.node.start_mark.index
        return None, smap, [Diagnostic("E106", str(exc), at, at + 1, help=help)]
    return data, smap, diagnostics


MAX_DEPTH = 32
MAX_NODES = 100_000  # after alias expansion: stops "billion laughs" documents
MAX_BYTES = 16 * 1024 * 1024  # of scalar text after alias expansion: one large value aliased many times


def _flow_too_deep(source: str) -> int | None:
    """Offset where `[` / `{` nesting, outside quotes and comments, passes MAX_DEPTH; None if it never does."""
    depth, quote, at = 0, "", 0
    while at < len(source):
        char = source[at]
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'" and (at == 0 or source[at - 1] in " \t\n[{,:"):
            quote = char
        elif char == "#" and (at == 0 or source[at - 1] in " \t\n"):
            at = source.find("\n", at)  # the comment runs to the end of its line
            if at < 0:
                return None
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return at
        elif char in "]}":
            depth = max(0, depth - 1)
        at += 1
    return None


class _TooLarge(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.node = node


def _convert(node: yaml.Node, path: Path, smap: SourceMap, diags: list[Diagnostic], budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge(f"the spec expands to more than {MAX_NODES:,} values", node)
    if isinstance(node, yaml.ScalarNode):
        budget[1] -= len(node.value)
        if budget[1] < 0:
            raise _TooLarge(f"the spec expands to more than {MAX_BYTES // 2**20} MiB of text", node)
    if len(path) > MAX_DEPTH:
        raise _TooLarge(f"the spec nests deeper than {MAX_DEPTH} levels", node)
    smap.values[path] = (node.start_mark.index, node.end_mark.index)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                span = (key_node.start_mark.index, key_node.end_mark.index)
                diags.append(
                    Diagnostic(
                        "E105",
                        f"duplicate key '{key}'",
                        *span,
                        help="each key may appear once; later values would be lost",
                    )
                )
                continue
            child = (*path, key)
            smap.keys[child] = (key_node.start_mark.index, key_node.end_mark.index)
            out[key] = _convert(value_node, child, smap, diags, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), smap, diags, budget) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return "<collection>"
    return _construct(node)


def _construct(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
