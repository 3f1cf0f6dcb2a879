"""One build at a time per build folder; a killed build leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distillc import api
from distillc.errors import DistillcError
from tests.conftest import review_texts, write_spec


def test_a_second_build_in_the_same_folder_stops_at_once_and_a_killed_one_frees_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path, base_url="http://127.0.0.1:9/v1", student=str(tiny_model), inputs=review_texts(10))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from distillc.build.lock import build_lock; from pathlib import Path; import time\n"
            f"with build_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(DistillcError) as caught:
        api.build(spec, out=out, until="inputs")
    assert caught.value.code == "E202"
    assert f"another build is running in {out} (pid {holder.pid})" in caught.value.message
    assert not (out / "manifest.json").exists()  # it touched nothing
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    result = api.build(spec, out=out, until="inputs")  # the kernel released the dead build's lock
    assert result.stage("inputs").summary["kept"] == 10
