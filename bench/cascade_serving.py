"""A built package's cascade, served: the live check against what the build predicted, shadowing's cost to
p50, and a teacher killed mid-run.

    python bench/cascade_serving.py build/review-sentiment-cascade [--requests 200] [--out cascade-serving.json]

The teacher is a local OpenAI-compatible server in a process of its own (tests/fake_teacher.py) that answers
each held-out input as the build's teacher did (its answers in the verify stage's predictions), so the
package's routes can be checked against the build's figures on the same inputs. Three parts:

1. live: the package (its own cascade settings, the endpoint pointed at the local teacher) is asked every
   held-out input; the share it sent to the teacher, and its agreement with the teacher where it kept the
   answer, each with a 95% Wilson interval, against the gate's expected escalation and agreement;
2. shadow: p50 and p95 of /v1/predict with `shadow_share` 0 and --shadow-share (1: every student answer also
   asked of a teacher that takes 50 ms), alternating rounds, one request at a time;
3. killed: every request escalated (threshold above any confidence), one at a time; the teacher process is
   killed (SIGKILL) a third of the way through and restarted two thirds of the way. Routes, statuses and
   latency per phase, and the breaker's state as /metrics reports it.

A package without a cascade can be benched too: it is given one (threshold from --threshold).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, run from anywhere

from distillc.quality.confidence import wilson  # noqa: E402
from distillc.quality.latency import percentiles  # noqa: E402
from distillc_runtime import cpu  # noqa: E402
from tests.helpers import free_port, set_deploy, set_info  # noqa: E402

TEACHER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.fake_teacher import FakeTeacher
answers = json.loads(open(sys.argv[2]).read())
answer = lambda text: answers.get(text, "negative")
with FakeTeacher(answer, delay_s=float(sys.argv[4]), record=False, port=int(sys.argv[3])) as teacher:
    print(teacher.base_url, flush=True)
    import time; time.sleep(3600)
"""


class Teacher:
    """The local teacher in its own process, on a fixed port so it can come back where it was."""

    def __init__(self, answers: Path, port: int, delay_s: float = 0.0) -> None:
        self.answers, self.port, self.delay_s = answers, port, delay_s
        self.start()

    def start(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        self.process = subprocess.Popen(
            [sys.executable, "-c", TEACHER, root, str(self.answers), str(self.port), str(self.delay_s)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def serve(package: Path, capture: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    launcher = str(package / "distillc_runtime" / "launch.py")
    command = [sys.executable, "-I", launcher, "serve", str(package), "--port", str(port)]
    if capture:
        command += ["--capture-dir", str(capture)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200:
                return process, base
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the package did not start")


def predict(base: str, text: str) -> tuple[int, str, str, float]:
    """(status, output, route, seconds) of one /v1/predict."""
    body = json.dumps({"input": text}).encode()
    request = urllib.request.Request(f"{base}/v1/predict", body, {"content-type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer = json.loads(reply.read())
            return reply.status, answer["output"], answer["route"], time.perf_counter() - started
    except urllib.error.HTTPError as error:
        return error.code, "", "", time.perf_counter() - started


def breaker(base: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("distillc_teacher_breaker "))


def with_cascade(package: Path, folder: Path, base_url: str, **settings: Any) -> Path:
    copy = folder / f"package-{len(list(folder.iterdir()))}"
    shutil.copytree(package, copy, symlinks=True)
    info = json.loads((copy / "package.json").read_text())
    cascade = info.get("cascade") or {
        "threshold": 0.0,
        "expected_escalation": 0.0,
        "expected_agreement": 1.0,
        "agreement_interval": [0.0, 1.0],
        "model": "teacher",
        "api_key_env": "TEACHER_API_KEY",
        "timeout_s": 2.0,
        "max_retries": 1,
        "messages": [{"role": "system", "content": info["task"]["instructions"]}],
        "response_format": None,
        "output_type": info["task"]["output_type"],
        "labels": info["task"]["labels"],
        "instructions": info["task"]["instructions"],
    }
    set_info(copy, cascade=cascade | {"base_url": base_url} | settings)
    return copy


def live(package: Path, rows: list[dict[str, Any]], teacher: Teacher, folder: Path) -> dict[str, Any]:
    served = with_cascade(package, folder, teacher.base_url)
    expected = json.loads((served / "package.json").read_text())["cascade"]
    process, base = serve(served)
    try:
        answers = [predict(base, row["input"]) for row in rows]
    finally:
        process.terminate()
        process.wait()
    routes = [route for _, _, route, _ in answers]
    escalated = sum(route != "student" for route in routes)
    kept = [(row, out) for row, (_, out, route, _) in zip(rows, answers, strict=True) if route == "student"]
    agree = sum(out == row["expected"] for row, out in kept)
    return {
        "n": len(rows),
        "routes": {route: routes.count(route) for route in sorted(set(routes))},
        "escalation": round(escalated / len(rows), 4),
        "escalation_interval": [round(x, 4) for x in wilson(escalated, len(rows))],
        "expected_escalation": expected["expected_escalation"],
        "agreement": round(agree / len(kept), 4) if kept else None,
        "agreement_interval": [round(x, 4) for x in wilson(agree, len(kept))],
        "expected_agreement": expected["expected_agreement"],
        "expected_agreement_interval": expected.get("agreement_interval"),
    }


def shadow(package: Path, texts: list[str], answers: Path, folder: Path, rounds: int, share: float) -> dict[str, Any]:
    slow = Teacher(answers, free_port(), delay_s=0.05)
    times: dict[str, list[float]] = {"off": [], "on": []}
    try:
        packages = {
            "off": with_cascade(package, folder, slow.base_url, threshold=0.0, shadow_share=0.0),
            "on": with_cascade(package, folder, slow.base_url, threshold=0.0, shadow_share=share),
        }
        for _ in range(rounds):
            for mode, served in packages.items():
                process, base = serve(served)
                try:
                    predict(base, texts[0])  # warm
                    times[mode] += [predict(base, text)[3] * 1000 for text in texts]
                finally:
                    process.terminate()
                    process.wait()
    finally:
        slow.kill()
    return {"shadow_share": share} | {mode: percentiles(values) for mode, values in times.items()}


def killed(package: Path, texts: list[str], answers: Path, folder: Path, cooldown_s: float = 2.0) -> dict[str, Any]:
    teacher = Teacher(answers, free_port())
    served = with_cascade(
        package, folder, teacher.base_url, threshold=1.01, timeout_s=1.0, max_retries=1, breaker_cooldown_s=cooldown_s
    )
    set_deploy(served, request_timeout_s=5.0)
    process, base = serve(served)
    phases: dict[str, list[tuple[int, str, float, float]]] = {"up": [], "killed": [], "back": []}
    third = max(1, len(texts) // 3)
    recovered_after = None
    try:
        for phase in phases:
            if phase == "killed":
                teacher.kill()
            if phase == "back":
                teacher.start()  # on the same port: the breaker's next trial call finds it back
                restarted = time.monotonic()
            i = 0
            # Back: until the breaker has had its cooldown and a trial, so recovery shows.
            while i < third or (phase == "back" and time.monotonic() - restarted < cooldown_s + 1):
                status, _, route, seconds = predict(base, texts[i % len(texts)])
                phases[phase].append((status, route, seconds * 1000, breaker(base)))
                if phase == "back" and route == "teacher" and recovered_after is None:
                    recovered_after = round(time.monotonic() - restarted, 2)
                i += 1
    finally:
        process.terminate()
        process.wait()
        teacher.kill()
    out: dict[str, Any] = {"breaker_cooldown_s": cooldown_s, "recovered_after_s": recovered_after}
    for phase, results in phases.items():
        routes = [route for _, route, _, _ in results]
        statuses = [status for status, _, _, _ in results]
        out[phase] = {
            "requests": len(results),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "routes": {route: routes.count(route) for route in sorted(set(routes))},
            "latency_ms": percentiles([ms for _, _, ms, _ in results]),
            "max_ms": round(max(ms for _, _, ms, _ in results), 1),
            "breaker_open_share": round(statistics.fmean(1.0 if r[3] == 1.0 else 0.0 for r in results), 3),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", type=Path, help="a build folder (build/<name>) whose package has run verify")
    parser.add_argument("--requests", type=int, default=120, help="requests per part (shadow: per round)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shadow-share", type=float, default=1.0, help="of the student's answers, in part 2")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = json.loads((args.build / "report.json").read_text())
    variant = report["gate"]["variant"]
    verify = next(s for s in json.loads((args.build / "manifest.json").read_text())["stages"] if s["name"] == "verify")
    rows = [json.loads(line) for line in (args.build / verify["artifact"] / f"{variant}.predictions.jsonl").open()]
    rows = [row for row in rows if not row.get("refused")]
    package = args.build / "package"
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        answers = folder / "answers.json"
        answers.write_text(json.dumps({row["input"]: row["expected"] for row in rows}))
        texts = [rows[i % len(rows)]["input"] for i in range(args.requests)]
        teacher = Teacher(answers, free_port())
        try:
            result = {"cpu": cpu.describe(), "live": live(package, rows, teacher, folder)}
        finally:
            teacher.kill()
        result["shadow"] = shadow(package, texts, answers, folder, args.rounds, args.shadow_share)
        result["killed"] = killed(package, texts, answers, folder)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
