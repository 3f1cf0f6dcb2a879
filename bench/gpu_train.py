"""Training speed of the student: padded batches against packed ones, in the same process.

    python bench/gpu_train.py ROWS.jsonl [--model smollm2-135m-instruct] [--steps 300] [--batch-size 8]
                              [--peak-tflops 989]

ROWS.jsonl holds training rows ({"input": ..., "output": ...}, e.g. a build's stages/split/*/train.jsonl).
Each mode trains a fresh copy of the model for --steps optimizer steps through distillc's own loop (bf16
autocast on CUDA), and reports tokens/s (real tokens, padding not counted), the share of a padded batch
that is padding, and MFU: 6 x parameters x tokens / seconds / peak FLOP/s (--peak-tflops: the device's
dense bf16 peak; on CUDA, H100/H200 are recognised). Writes a JSON line per mode to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}  # dense bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=Path)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    args = parser.parse_args()

    import torch

    from distillc.build.artifacts import read_jsonl
    from distillc.student.examples import encode
    from distillc.student.models import load_causal_lm
    from distillc.student.prompt import prompt_ids, prompt_template
    from distillc.student.trainer import Schedule, epoch_batches, fit, padded_tokens

    peak = args.peak_tflops
    if not peak and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    source = read_jsonl(args.rows)
    wanted = args.steps * args.batch_size
    rows = list(itertools.islice(itertools.cycle(source), wanted))  # repeated when the file is short
    for packing in (False, True):
        model, tokenizer = load_causal_lm(args.model)
        prefix, suffix = prompt_template(tokenizer, "Answer.")
        template = {"prompt_prefix": prefix, "prompt_suffix": suffix}
        examples = [
            encode(tokenizer, prompt_ids(tokenizer, template, r["input"]), r["output"], args.max_seq_len) for r in rows
        ]
        schedule = Schedule(
            epochs=1,
            batch_size=args.batch_size,
            grad_accumulation=1,
            learning_rate=5e-5,
            seed=0,
            soft_label_weight=0.0,
            packing=packing,
            checkpoint_every=0,
            patience=0,
        )
        progress = fit(model, examples, [], schedule, tokenizer.pad_token_id, None, lambda message: None)
        lengths = [len(e.ids) for e in examples]
        real, padded = padded_tokens(epoch_batches(len(examples), args.batch_size, 0, 0), lengths)
        parameters = sum(p.numel() for p in model.parameters())
        per_second = progress.tokens / progress.seconds
        print(
            json.dumps(
                {
                    "mode": "packed" if packing else "padded",
                    "device": "cuda" if torch.cuda.is_available() else "cpu",
                    "steps": progress.step,
                    "tokens_per_second": round(per_second, 1),
                    "padding_share_if_padded": round(1 - real / padded, 4),
                    "mfu": round(6 * parameters * per_second / (peak * 1e12), 4) if peak else None,
                    "final_loss": progress.step_losses[-1] if progress.step_losses else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
