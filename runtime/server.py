"""HTTP server for a distilled model: POST /v1/predict and GET /healthz."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from distillc_runtime.batching import Batcher
from distillc_runtime.generate import Generator
from distillc_runtime.providers import TARGET_PROVIDERS, providers_for

logger = logging.getLogger("distillc_runtime")

MAX_INPUT_CHARS = 20_000


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)


class PredictResponse(BaseModel):
    output: str


def create_app(package_dir: str | Path) -> FastAPI:
    package = Path(package_dir)
    info = json.loads((package / "package.json").read_text(encoding="utf-8"))
    target = info.get("target", "cpu")
    generator = Generator(package / "model", providers=providers_for(target, package / "model"))
    running = generator.session.get_providers()
    if running[0] != TARGET_PROVIDERS.get(target, running)[0]:
        # onnxruntime falls back to the CPU when a GPU provider cannot load (no GPU, no driver, a CUDA
        # mismatch): it still answers, far slower. Say so where operators look.
        logger.warning("package built for %s is running on %s", target, ", ".join(running))
    # Warm up before serving: first-run allocations (and, on GPUs, kernel or TensorRT engine builds)
    # then happen before the health check passes, not in a user's request.
    generator.predict("warm-up", max_new_tokens=1)
    max_batch_size = int(info.get("deploy", {}).get("max_batch_size", 1))
    batcher = Batcher(generator.predict_batch, max_batch_size) if max_batch_size > 1 else None
    app = FastAPI(title=info["name"], version=info.get("distillc_version", ""))

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "model": info["name"], "target": target, "providers": running}

    @app.post("/v1/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        # A plain `def`: FastAPI runs it in a worker thread, and onnxruntime sessions are thread-safe.
        if problem := generator.too_long(request.input):
            raise HTTPException(status_code=422, detail=problem)
        output = batcher.submit(request.input) if batcher else generator.predict(request.input)
        return PredictResponse(output=output)

    return app
