"""The student model: loading, its prompt, and turning it into the graphs a package runs (ONNX, quantized, TensorRT)."""
