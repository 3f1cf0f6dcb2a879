"""distillc_runtime: serves a distilled model exported to ONNX.

Ships inside every package distillc emits. Imports only the standard library, numpy,
onnxruntime, tokenizers, fastapi and uvicorn: no torch, no transformers, no distillc.
"""
