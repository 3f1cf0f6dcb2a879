"""Key-like text is masked wherever distillc prints or writes text it did not make: diagnostics (which
quote spec lines), error messages, and the spec as report.json records it.

What counts as key-like: credentials in a URL (`//user:secret@host`, `?api_key=...`), a value after a
key-like name (`api_key: ...`, `"token": "..."`, `Authorization: Bearer ...`), and the shapes providers
give their keys (`sk-...`, `hf_...`, `AKIA...`, `ghp_...`, `xox?-...`, `AIza...`).
"""

from __future__ import annotations

import re

MASK = "****"
PATTERNS = (
    # user:password@ or token@ in a URL
    (re.compile(r"(?<=://)[^/\s@'\"]+@"), MASK + "@"),
    # a key-like query parameter
    (re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig)=)[^&\s#'\"]+"), r"\1" + MASK),
    # a value after a key-like name, in YAML, JSON, headers or the environment
    (
        re.compile(
            r"(?i)((?:api[_-]?key|secret|token|password|passwd|authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)"
            r"(?=[^\s\"',}]{6,})[^\s\"',}]+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',}]{6,}"), r"\1" + MASK),
    # provider key shapes
    (re.compile(r"\b(?:sk|gsk|xai|rk|pk)[-_][A-Za-z0-9_\-]{12,}"), MASK),
    (re.compile(r"\b(?:hf|ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{16,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), MASK),
)


def redact(text: str) -> str:
    """`text` with every key-like part replaced by ****."""
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def key_like(text: str) -> bool:
    return redact(text) != text
