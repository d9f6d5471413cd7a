"""The interface layer: what the command line, `bench/`, `scripts/` and Python users call.

`compile` holds the compiler side (export, build, tune, weights, tuning databases; onnx and TVM load when
a function needs them), `run` the runtime side (artifacts, sessions, videos; numpy and the TVM runtime
only, never the compiler). `import mvcompile` exposes the common names of both, lazily."""
