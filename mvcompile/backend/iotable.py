"""The artifact's I/O: the manifest's tensors as the compiled `main` takes and returns them, and
`io.txt`, the VM argument/result table that the C++ runner reads."""

from __future__ import annotations

from mvcompile.artifact.export_manifest import ExportManifest
from mvcompile.backend.compile import TensorSig
from mvcompile.errors import MvcompileError

HEADER = "# mvcompile io v1"
CHANNELS_LAST = "NTHWC"


class IOTableError(MvcompileError, ValueError):
    """The manifest does not describe the compiled function's parameters and results."""


def artifact_io(manifest: ExportManifest, params: list[TensorSig], results: list[TensorSig]) -> ExportManifest:
    """A copy of the export's manifest with every input, output and state shaped as the compiled
    `main` takes and returns it; a state the backend stores channels-last says so (`layout: NTHWC`).

    Checks that `main` takes the frames then one parameter per state, and returns the logits then
    one result per state, each state's result shaped like its parameter."""
    out = manifest.model_copy(deep=True)
    states = out.states
    if len(params) != 1 + len(states) or len(results) != 1 + len(states):
        raise IOTableError(f"the compiled model takes {len(params)} inputs and returns {len(results)} results; "
                           f"the manifest lists {len(states)} states (expected 1 + states for each)")
    by_name = {p.name: p for p in params}
    for entry in out.inputs:
        if entry.name not in by_name:
            raise IOTableError(f"the compiled model has no parameter '{entry.name}'")
        entry.shape = list(by_name[entry.name].shape)
    for entry, result in zip(out.outputs, results):
        entry.shape = list(result.shape)
    for state, param, result in zip(states, params[1:], results[1:]):
        if state.input != param.name:
            raise IOTableError(f"state '{state.name}' does not match the compiled model's parameter at its "
                               f"position ('{param.name}' {list(param.shape)})")
        if param.shape != result.shape:
            raise IOTableError(f"state '{state.name}': parameter {list(param.shape)} and result "
                               f"{list(result.shape)} differ in shape")
        if list(param.shape) != state.shape:
            b, c, t, h, w = state.shape if len(state.shape) == 5 else (None,) * 5
            if list(param.shape) != [b, t, h, w, c]:
                raise IOTableError(f"state '{state.name}': compiled shape {list(param.shape)} is neither "
                                   f"the export's {state.shape} nor its channels-last form")
            state.shape, state.layout = list(param.shape), CHANNELS_LAST
    return out


def io_table(manifest: ExportManifest) -> str:
    """Render io.txt from an artifact's tensors (as `artifact_io` shaped them)."""
    frames, logits = manifest.inputs[0], manifest.outputs[0]
    lines = [HEADER, f"input {frames.name} {frames.dtype} {_dims(frames.shape)}"]
    for state in manifest.states:
        fill = f" {state.fill}" if state.fill != 0 else ""  # an int8 state starts at its zero point
        lines.append(f"state {state.input} {state.output} {state.dtype} {_dims(state.shape)}{fill}")
    lines.append(f"output {logits.name} {logits.dtype} {_dims(logits.shape)}")
    return "\n".join(lines) + "\n"


def _dims(dims: list[int]) -> str:
    return ",".join(str(d) for d in dims)
