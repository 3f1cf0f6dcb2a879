"""HTTP server for a distilled model: POST /v1/predict and GET /healthz."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from distillc_runtime.batching import Batcher
from distillc_runtime.generate import Generator
from distillc_runtime.providers import providers_for

MAX_INPUT_CHARS = 20_000


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)


class PredictResponse(BaseModel):
    output: str


def create_app(package_dir: str | Path) -> FastAPI:
    package = Path(package_dir)
    info = json.loads((package / "package.json").read_text(encoding="utf-8"))
    generator = Generator(package / "model", providers=providers_for(info.get("target", "cpu")))
    max_batch_size = int(info.get("deploy", {}).get("max_batch_size", 1))
    batcher = Batcher(generator.predict_batch, max_batch_size) if max_batch_size > 1 else None
    app = FastAPI(title=info["name"], version=info.get("distillc_version", ""))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "model": info["name"]}

    @app.post("/v1/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        # A plain `def`: FastAPI runs it in a worker thread, and onnxruntime sessions are thread-safe.
        output = batcher.submit(request.input) if batcher else generator.predict(request.input)
        return PredictResponse(output=output)

    return app
