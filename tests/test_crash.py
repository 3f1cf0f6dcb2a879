"""kill -9 during labeling, several times over: nothing paid for is lost or paid for twice.

One build process after another is killed at a random moment while it labels; a last one finishes.
The dataset must equal an uninterrupted run's, an answer journaled before a kill must never be sent
again, and each kill may cost at most the requests in flight at that moment (max_concurrency).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from distillc import api
from distillc.spec.load import load_spec
from distillc.teacher import client
from distillc.teacher.journal import request_key
from tests.conftest import review_texts, sentiment, set_teacher, write_spec
from tests.fake_teacher import FakeTeacher
from tests.helpers import journaled as journal_entries

CONCURRENCY = 8
KILLS = 4


def test_repeated_sigkill_during_labeling_loses_nothing_and_pays_once(tmp_path: Path, tiny_model: Path) -> None:
    texts = review_texts(240)
    rng = random.Random(7)
    latency = lambda: rng.uniform(0.005, 0.06)  # noqa: E731
    with FakeTeacher(sentiment) as teacher:  # the uninterrupted run, for comparison
        reference_spec = write_spec(
            tmp_path / "reference", base_url=teacher.base_url, student=str(tiny_model), inputs=texts
        )
        set_teacher(reference_spec, max_concurrency=CONCURRENCY)
        reference = api.build(reference_spec, out=tmp_path / "reference" / "out", until="label")

    out = tmp_path / "crashed" / "out"
    kills = []
    with FakeTeacher(sentiment, delay_s=latency) as teacher:
        spec = write_spec(tmp_path / "crashed", base_url=teacher.base_url, student=str(tiny_model), inputs=texts)
        set_teacher(spec, max_concurrency=CONCURRENCY)
        ir = load_spec(spec)
        model, params = client.identity(ir.teacher, ir.task)
        key_of = lambda body: request_key(model, body["messages"], params)  # noqa: E731
        command = [sys.executable, "-m", "distillc", "build", str(spec), "--out", str(out), "--until", "label"]
        for _ in range(KILLS):
            started = teacher.requests
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            target = started + rng.randint(10, 40)
            deadline = time.monotonic() + 120
            while teacher.requests < target and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))  # anywhere: mid-request, mid-write, between answers
            in_flight = teacher.in_flight
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            killed_at = time.monotonic()
            journaled = {e["key"] for e in journal_entries(out)}
            sent = {key_of(b) for b in teacher.bodies[started:]}
            kills.append({"at": killed_at, "journaled": journaled, "sent": sent, "in_flight": in_flight})
        finished = subprocess.run(command, capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
        bodies, arrivals = list(teacher.bodies), list(teacher.arrivals)

    # The dataset equals the uninterrupted run's.
    labeled = (out / "cache" / "label").glob("*/labeled.jsonl")
    assert next(labeled).read_text() == (reference.stage("label").artifact / "labeled.jsonl").read_text()
    keys = [key_of(b) for b in bodies]
    assert len(set(keys)) == len(texts)
    previously_journaled: set[str] = set()
    for kill in kills:
        # Lost to this kill: sent in this run but not on disk when it died. At most what was in flight.
        lost = kill["sent"] - kill["journaled"]
        assert len(lost) <= CONCURRENCY
        assert not kill["sent"] & previously_journaled  # an answer on disk is never asked for again
        # Nothing journaled before this kill is sent after it.
        after = {k for k, t in zip(keys, arrivals, strict=True) if t > kill["at"]}
        assert not after & kill["journaled"]
        previously_journaled = kill["journaled"]
    duplicates = len(keys) - len(set(keys))
    assert duplicates == sum(len(k["sent"] - k["journaled"]) for k in kills)
    assert duplicates <= KILLS * CONCURRENCY
    print(
        f"\n{KILLS} kills; requests {len(keys)} for {len(texts)} inputs; duplicates {duplicates} "
        f"(per kill: {[len(k['sent'] - k['journaled']) for k in kills]}, in flight at the server: "
        f"{[k['in_flight'] for k in kills]}); journaled before the kills: {[len(k['journaled']) for k in kills]}"
        "; lost 0"
    )
