"""`io.txt`: the VM argument/result table that the C++ runner reads."""

from __future__ import annotations

from typing import Any

import onnx

from mvcompile.backend.artifact import IO_TABLE

HEADER = "# mvcompile io v1"
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}


class IOTableError(ValueError):
    """The manifest does not describe the ONNX graph's inputs and outputs."""


def _graph_io(values: Any) -> list[tuple[str, str, list[int]]]:
    out = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if -1 in dims:
            raise IOTableError(f"ONNX value '{value.name}' has a dynamic shape {dims}; export static shapes")
        out.append((value.name, ONNX_DTYPES.get(tensor.elem_type, f"onnx-{tensor.elem_type}"), dims))
    return out


def _dims(dims: list[int]) -> str:
    return ",".join(str(d) for d in dims)


def io_table(model: onnx.ModelProto, manifest: dict[str, Any]) -> str:
    """Render io.txt, checking that the manifest's states pair the graph's extra inputs and outputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = _graph_io(v for v in model.graph.input if v.name not in initializers)
    outputs = _graph_io(model.graph.output)
    states = manifest.get("states", [])
    if len(inputs) != 1 + len(states) or len(outputs) != 1 + len(states):
        raise IOTableError(
            f"{IO_TABLE}: the ONNX graph has {len(inputs)} inputs and {len(outputs)} outputs, "
            f"the manifest lists {len(states)} states (expected 1 + states for each)"
        )
    name, dtype, dims = inputs[0]
    lines = [HEADER, f"input {name} {dtype} {_dims(dims)}"]
    for (in_name, in_dtype, in_dims), (out_name, _, out_dims), state in zip(inputs[1:], outputs[1:], states):
        if (state.get("input"), state.get("output")) != (in_name, out_name) or in_dims != out_dims:
            raise IOTableError(
                f"state '{state.get('name')}' ({state.get('input')} -> {state.get('output')}) does not match "
                f"the graph's input/output pair at its position ({in_name} {in_dims} -> {out_name} {out_dims})"
            )
        lines.append(f"state {in_name} {out_name} {in_dtype} {_dims(in_dims)}")
    name, dtype, dims = outputs[0]
    lines.append(f"output {name} {dtype} {_dims(dims)}")
    return "\n".join(lines) + "\n"
