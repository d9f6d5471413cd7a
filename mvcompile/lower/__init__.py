"""Lowerings of the IR: a torch module (the reference executor) and an ONNX model."""
