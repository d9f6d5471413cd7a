"""TVM backend: target presets and artifact builds."""
