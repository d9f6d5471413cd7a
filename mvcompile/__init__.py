"""mvcompile: MoViNet specs to streaming binaries through ONNX and Apache TVM."""
