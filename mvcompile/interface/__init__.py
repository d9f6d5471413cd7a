"""The interface layer: what the command line, `bench/`, `scripts/` and Python users call.

`compile` holds the compiler side (export, build, tune, weights, tuning databases; needs onnx and
torch's siblings), `run` the runtime side (artifacts, sessions, videos; numpy and the TVM runtime
only). Import the one you need; `import mvcompile` exposes the common names lazily."""
