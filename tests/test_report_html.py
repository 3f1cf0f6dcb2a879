"""report.html: rendered from report.json, self-contained, and readable in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from distillc import api
from distillc.report.headline import usd_text
from distillc.report.html import render_html
from tests.conftest import edit_spec, review_texts, sentiment, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import distillc

SECTIONS = ["headline", "data", "teacher", "training", "quality", "variants", "stages"]


def chromium() -> str:
    """Debian's chromium (.ci/run installs it); CI fails without it, a workstation skips."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("no chromium on this machine")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    folder = tmp_path_factory.mktemp("report")
    with FakeTeacher(sentiment, delay_s=0.05) as teacher:
        spec = write_spec(
            folder,
            base_url=teacher.base_url,
            student=str(tiny_model),
            inputs=review_texts(60),
            changes={"teacher.price_per_1m_tokens": {"input": 2.5, "output": 10.0}, "deploy.usd_per_hour": 0.1},
        )
        edit_spec(spec, {"export.quantization": ["fp32", "int8"]})
        api.build(spec, out=folder / "out")
    return folder / "out"


def test_the_page_carries_report_json_numbers(built: Path) -> None:
    report = json.loads((built / "report.json").read_text())
    page = (built / "report.html").read_text()
    head = report["headline"]
    assert f"{head['student']['p50_ms']:.1f} ms" in page
    assert f"{head['student']['score']:.3f}" in page
    assert usd_text(head["teacher"]["usd_per_1k"]) in page and usd_text(head["student"]["usd_per_1k"]) in page
    for variant in report["verify"]["variants"]:
        assert f"<td>{variant['name']}</td>" in page
    folder = report["folder"]
    assert f"Build folder {folder['bytes'] / 1e6:.0f} MB on disk, of which the package is" in page
    measured_on = report["verify"]["cpu"]  # the kernels differ by CPU: the page says which one measured
    assert f"on a CPU with {measured_on['level']} ({measured_on['machine']}: {' '.join(measured_on['flags'])})" in page
    assert page.count("<svg") >= 5  # distribution, training, confusion, variants, stages, latency, cost
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    # The teacher was 50 ms per request at least; the student answered a tiny model's label in far less.
    assert head["teacher"]["p50_ms"] >= 50 and head["faster"] == pytest.approx(
        head["teacher"]["p50_ms"] / head["student"]["p50_ms"], rel=0.01
    )


def test_build_ends_with_the_headline_then_the_report_and_package(built: Path) -> None:
    spec = built.parent / "spec.yaml"
    text = distillc("build", str(spec), "--out", str(built))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[-2] == f"report:  {built / 'report.html'}" and lines[-1].startswith(f"package: {built / 'package'}")
    assert any(line.startswith("teacher  reference") for line in lines)
    assert any("faster" in line and "cheaper than the teacher" in line for line in lines)

    machine = distillc("build", str(spec), "--out", str(built), "--log-format", "json")
    assert machine.returncode == 0, machine.stderr
    done = json.loads(machine.stdout.splitlines()[-1])
    assert done["kind"] == "build_done" and done["data"]["ran"] == []
    assert done["data"]["headline"] == json.loads((built / "report.json").read_text())["headline"]
    assert all(json.loads(line)["kind"] for line in machine.stderr.splitlines())  # every event a JSON object


def test_user_text_is_escaped() -> None:
    report = {"name": "<script>alert(1)</script>", "status": "failed", "cache": {}, "timings_s": {}}
    page = render_html(report)
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page


def test_headless_chromium_renders_every_section_offline(built: Path, tmp_path: Path) -> None:
    executable = chromium()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    url = (built / "report.html").as_uri()
    requests, problems = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url, wait_until="load")
        for section in SECTIONS:
            box = page.locator(f"section#{section}").bounding_box()
            assert box and box["height"] > 40, section
        svgs = page.locator("section svg").count()
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert requests == [url] and problems == []
    assert svgs >= 5
    image = Image.open(shot).convert("L")
    assert image.height > 1500
    histogram = image.histogram()
    assert max(histogram) < 0.95 * sum(histogram)  # not one flat colour
    assert sum(1 for count in histogram if count) > 20
