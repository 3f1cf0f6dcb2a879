"""The student as ONNX: torch.onnx's export of the decoder with its key/value cache, the generation config
that ships beside it, and the check that the graph answers as the PyTorch student did."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillc.errors import DistillcError
from distillc.quality.latency import percentiles
from distillc.student.models import quiet_transformers
from distillc.student.prompt import answer_ids, load_prompt
from distillc.task import task_type
from distillc.task.base import StudentTokens


def write_generation_config(model_dir: Path, out: Path, spec: Any) -> None:
    """generation.json: the prompt around each input, when to stop, and what the answer may be: the task
    type's decoding constraint (a label task's labels as the token sequences the student was trained on; a
    JSON task's schema)."""
    from transformers import AutoTokenizer

    config = {
        **load_prompt(model_dir),
        "max_new_tokens": spec.deploy.max_new_tokens,
        "output_type": spec.task.output_type,
    }
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    tokens = StudentTokens(functools.partial(answer_ids, tokenizer), tokenizer.eos_token_id, vocab_size)
    config |= task_type(spec.task).constraint(spec.task, tokens)
    (out / "generation.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def generation_config(variant: Path) -> dict[str, Any]:
    """A variant's generation.json: its prompt, stopping tokens, trained length and decoding constraint."""
    return json.loads((variant / "generation.json").read_text(encoding="utf-8"))


def onnx_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(("model.onnx", "prefill.onnx")))


def export_onnx(model_dir: Path, target: Path, log_path: Path | None = None) -> int:
    """Write `target` (and its external weights file); returns the number of decoder layers.

    The exporter's own progress lines and warnings go to `log_path`, not to the user's terminal.
    """
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    quiet_transformers()

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    config = model.config
    n_layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(config=config)
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,  # only the last position's logits are ever read: skip the rest of the head
            )
            present = []
            for layer in out.cache.layers[:n_layers]:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    batch, seq, past_len = 2, 3, 4
    example = (
        torch.randint(0, config.vocab_size, (batch, seq)),
        torch.ones(batch, past_len + seq, dtype=torch.long),
        torch.arange(past_len, past_len + seq).repeat(batch, 1),
        *[torch.zeros(batch, kv_heads, past_len, head_dim) for _ in range(2 * n_layers)],
    )
    past_names = [f"past.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    b, s, p, t = (torch.export.Dim(n) for n in ("batch", "seq", "past", "total"))
    dynamic = {
        "input_ids": {0: b, 1: s},
        "attention_mask": {0: b, 1: t},
        "position_ids": {0: b, 1: s},
        "past": tuple({0: b, 2: p} for _ in past_names),
    }
    failure = DistillcError(
        "E311",
        f"the portable export of the {config.model_type} student (torch.onnx.export) failed",
        help=f"the exporter's log is in {log_path}" if log_path else None,
    )
    with torch.no_grad(), library_output(log_path, failure):
        torch.onnx.export(
            Decoder(),
            example,
            str(target),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *[n.replace("past.", "present.") for n in past_names]],
            verbose=False,
        )
    return n_layers


@contextlib.contextmanager
def library_output(log_path: Path | None, failure: DistillcError) -> Iterator[None]:
    """Send a library's prints, log records and warnings to `log_path` rather than the user's terminal,
    and turn whatever it raises into `failure`, with the first line of the cause appended."""
    log = io.StringIO()
    root, exporter = logging.getLogger(), logging.getLogger("torch.onnx")
    saved = root.handlers[:], root.level, exporter.level
    root.handlers = [logging.StreamHandler(log)]  # onnxruntime's quantizers log to the root logger
    root.setLevel(logging.WARNING)
    exporter.setLevel(logging.ERROR)  # torch logs through handlers of its own
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except DistillcError:
        raise  # already says what failed
    except Exception as exc:  # noqa: BLE001 - these libraries raise many types; the user needs one message
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise DistillcError(failure.code, f"{failure.message}: {cause}", help=failure.help) from None
    finally:
        root.handlers, level, exporter_level = saved
        root.setLevel(level)
        exporter.setLevel(exporter_level)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(log.getvalue(), encoding="utf-8")


def check_parity(model_dir: Path, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """The ONNX runtime's answers vs the PyTorch student's, token for token, with request latency.

    Both decode the same way (label-constrained for label tasks), so any difference is the export's."""
    from distillc_runtime.generate import Generator

    generator = Generator(model_dir)
    rows, latencies = [], []
    for p in predictions:
        if p.get("refused"):  # over the package's input limit: neither side answered it
            continue
        started = time.perf_counter()
        ids = generator.answer_ids(generator.prompt_ids(p["input"]))
        latencies.append((time.perf_counter() - started) * 1000)
        rows.append(
            {"id": p["id"], "input": p["input"], "torch": p["output_ids"], "onnx": ids, "same": ids == p["output_ids"]}
        )
    return {"rows": rows, "latency_ms": percentiles(latencies)}
