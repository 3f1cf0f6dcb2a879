"""Progress as users see it: rate, ETA and dollars; a live line on a terminal, sparse lines in a log."""

from __future__ import annotations

import io

from distillc.build.events import Event, Progress, TextSink


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_reports_rate_eta_and_dollars_and_always_the_last_step() -> None:
    events: list[Event] = []
    progress = Progress(events.append, "label", total=4, what="teacher answers", spent=lambda: 0.0125, every_s=3600)
    for _ in range(4):
        progress.step()
    assert len(events) == 1  # throttled, but the last step always shows
    last = events[0]
    assert last.message.startswith("4/4 teacher answers · ") and "ETA 0s" in last.message
    assert last.message.endswith("$0.0125")
    assert last.data["done"] == last.data["total"] == 4 and last.data["rate_per_s"] > 0


def test_progress_says_where_it_stopped_when_it_ends_early() -> None:
    events: list[Event] = []
    progress = Progress(events.append, "label", total=10, what="teacher answers", every_s=3600)
    progress.step(3)
    progress.finish()
    assert [e.data["done"] for e in events] == [3]


def test_a_terminal_gets_one_live_line_and_a_log_gets_sparse_lines() -> None:
    steps = [Event("progress", "label", f"{i}/10 answers", {"done": i, "total": 10}, time=i) for i in (1, 2, 10)]
    done = Event("stage_done", "label", "10 labeled")
    terminal = Terminal()
    sink = TextSink(terminal)
    for event in [*steps, done]:
        sink(event)
    out = terminal.getvalue()
    assert out.count("\r\x1b[2K") == 3 and "[##..................] 1/10 answers" in out
    assert out.endswith("[####################] 10/10 answers\n[label] done: 10 labeled\n")

    log = io.StringIO()
    sink = TextSink(log, log_every_s=5)
    for event in [*steps, done]:
        sink(event)
    lines = log.getvalue().splitlines()
    assert lines == [
        "[label] [##..................] 1/10 answers",
        "[label] [####################] 10/10 answers",
        "[label] done: 10 labeled",
    ]
