"""No key reaches what a build writes or prints: a key put where users put them by mistake is refused at
`validate` with the line shown masked, and a build run with the key where it belongs (the environment)
leaves no trace of it in any file of the build folder, the package included, nor in its output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import review_texts, sentiment, write_spec
from tests.helpers import distillc

KEY = "sk-proj-FAKEdistillcTESTkey0123456789abcdef"


def spec_with(tmp_path: Path, teacher_lines: str) -> Path:
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student="tiny", inputs=review_texts(20))
    text = spec.read_text().replace("  base_url: http://127.0.0.1:9/v1\n", teacher_lines)
    spec.write_text(text)
    return spec


MISPLACED = {
    "credentials in base_url": (f"  base_url: http://user:{KEY}@127.0.0.1:9/v1\n", "E125"),
    "a key alone as base_url's user": (f"  base_url: https://{KEY}@api.example.com/v1\n", "E125"),
    "a key in base_url's query": (f"  base_url: https://api.example.com/v1?api_key={KEY}\n", "E125"),
    "api_key inline under teacher": (f"  base_url: http://127.0.0.1:9/v1\n  api_key: {KEY}\n", "E104"),
    "the key itself as api_key_env": ("  base_url: http://127.0.0.1:9/v1\n", "E113"),
}


@pytest.mark.parametrize("case", MISPLACED)
def test_a_misplaced_key_is_refused_at_validate_and_never_printed(tmp_path: Path, case: str) -> None:
    lines, code = MISPLACED[case]
    spec = spec_with(tmp_path, lines)
    if case == "the key itself as api_key_env":
        spec.write_text(spec.read_text().replace("api_key_env: DISTILLC_TEST_KEY", f"api_key_env: {KEY}"))
    for command in (["validate", str(spec)], ["validate", "--format", "json", str(spec)], ["plan", str(spec)]):
        done = distillc(*command, timeout=120)
        assert done.returncode != 0 and code in done.stdout + done.stderr, (command, done.stderr)
        assert KEY not in done.stdout + done.stderr and KEY[8:20] not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr
    assert "****" in distillc("validate", str(spec)).stderr  # the line is shown, masked


def test_a_build_writes_the_key_nowhere(tiny_model: Path, tmp_path: Path) -> None:
    from tests.fake_teacher import FakeTeacher

    with FakeTeacher(sentiment) as teacher:
        spec = write_spec(
            tmp_path, base_url=teacher.base_url, student=str(tiny_model), inputs=review_texts(40), epochs=1
        )
        spec.write_text(spec.read_text().replace("min_score: 0.5", "min_score: 0.0"))
        done = distillc("build", str(spec), "--out", str(tmp_path / "out"), env={"DISTILLC_TEST_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr
    scanned = 0
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert KEY.encode() not in path.read_bytes(), path
            scanned += 1
    assert scanned > 20 and (tmp_path / "out" / "package" / "manifest.json").is_file()


def test_build_output_masks_keys_an_endpoint_echoes() -> None:
    """Event messages can quote an endpoint's error body; both output formats mask what is key-like."""
    import io
    import json

    from distillc.build.events import Event, sink_for

    event = Event("warning", "label", f"endpoint answered 401: Incorrect API key provided: {KEY}", {"header": KEY})
    for log_format in ("text", "json"):
        stream = io.StringIO()
        sink_for(log_format, stream)(event)
        assert KEY not in stream.getvalue() and "****" in stream.getvalue()
        if log_format == "json":
            json.loads(stream.getvalue())
