"""The CPU package's model folders made from a Hugging Face model, as the export stage writes them (fused
fp32 graph, int8 and int4), and answers given by them in a fresh process, natively or under QEMU's
user-mode emulator at a lower x86-64 level:

    [qemu-x86_64 -cpu Haswell] python -m tests.variants MODEL_DIR ... < texts.json
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

NEW_TOKENS = 6


def export_fp32(hf_model: Path, target: Path, max_new_tokens: int = 8) -> Path:
    """The fused fp32 graph with its tokenizer and a plain text task's generation.json."""
    from transformers import AutoConfig, AutoTokenizer

    from distillc.student.fused_export import build_fused_onnx
    from distillc.student.prompt import eos_ids, prompt_template, save_prompt

    target.mkdir(parents=True)
    build_fused_onnx(hf_model, target / "model.onnx", target.parent / f"{target.name}-builder.log")
    tokenizer = AutoTokenizer.from_pretrained(hf_model)
    eos = eos_ids(tokenizer, AutoConfig.from_pretrained(hf_model))
    save_prompt(target, *prompt_template(tokenizer, "Say something."), eos, 256)
    shutil.copy2(hf_model / "tokenizer.json", target / "tokenizer.json")
    prompt = json.loads((target / "prompt.json").read_text())
    (target / "generation.json").write_text(json.dumps({**prompt, "max_new_tokens": max_new_tokens}))
    return target


def answers(models: list[Path], texts: list[str], cpu: str = "native") -> dict[str, list[list[int]]]:
    """Each model folder's greedy tokens for each text, from a fresh process on `cpu` (native, or a QEMU
    CPU model such as Haswell or Nehalem)."""
    command = [sys.executable, "-m", "tests.variants", *map(str, models)]
    if cpu != "native":
        command = ["qemu-x86_64", "-cpu", cpu, *command]
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        command, input=json.dumps(texts), capture_output=True, text=True, timeout=900, cwd=root, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    from distillc_runtime.generate import Generator

    texts = json.loads(sys.stdin.read())
    result = {}
    for folder in sys.argv[1:]:
        generator = Generator(folder)
        result[Path(folder).name] = [generator.generate_ids(generator.prompt_ids(t), NEW_TOKENS) for t in texts]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
