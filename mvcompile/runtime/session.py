"""StreamSession: run a compiled artifact clip by clip, carrying its states between calls."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mvcompile.artifact.format import LIBRARY, MANIFEST, ArtifactError, machine_arch, read_manifest
from mvcompile.artifact.manifest import ModelManifest
from mvcompile.artifact.signing import verify_folder
from mvcompile.support.tvm_log import error_line, quiet_tvm_stderr
from mvcompile.runtime.frames import FrameError, FrameValueError, check_frame_values
from mvcompile.runtime.threads import check_threads, pin_requested, session_threads, start_pool
from mvcompile.runtime.tvm_runtime import RelaxVM, device

__all__ = ["FrameError", "FrameValueError", "StreamSession"]


class StreamSession:
    """A loaded artifact plus its current streaming states.

    `push` refuses frames holding NaN or infinities, and (unless `check_range=False`) frames with values
    outside [-1, 2] (e.g. 8-bit pixels in 0..255), with a FrameValueError, before the model runs.
    With `trusted_keys` (public keys: `.pub` files of `mvcompile keygen`, their hex digits, or 32 raw bytes),
    only an artifact signed by one of them (`build --sign`) loads, checked before anything of it is read.
    Threads (`num_threads`: default TVM_NUM_THREADS, else the target's `num-cores`) run unpinned unless
    `pin_threads` (default: TVM_BIND_THREADS=1) asks; they serve pushes from the thread that created the session.
    """

    def __init__(self, artifact_dir: str | Path, *, num_threads: int | None = None, pin_threads: bool | None = None,
                 check_range: bool = True, trusted_keys: Sequence[str | Path | bytes] | None = None) -> None:
        self._dir = Path(artifact_dir)
        self._check_range = check_range
        self._frames_seen = 0
        if trusted_keys is not None:  # before anything of the artifact is read: native code cannot be validated
            verify_folder(self._dir, list(trusted_keys))
        if num_threads is not None:
            check_threads(num_threads)  # a bad count is refused before anything of the artifact is read
        self._manifest = read_manifest(self._dir)
        self._check_arch()
        self._frame = self._manifest.frame_input
        self._vm = self._load()
        self.num_threads = session_threads(num_threads, self._manifest.target)
        start_pool(self.num_threads, pin_requested(pin_threads))
        self._main = self._vm.function("main")
        self._input = self._vm.empty(tuple(self._frame.shape), self._frame.dtype)  # each push copies its frames in
        self._states: list[Any] = []
        self.reset()

    @property
    def manifest(self) -> ModelManifest:
        """The artifact's validated manifest (model I/O, states, target; build options as extra fields)."""
        return self._manifest

    @property
    def frames_seen(self) -> int:
        """Frames pushed since the last `reset` (per video of the batch)."""
        return self._frames_seen

    def reset(self) -> None:
        """Every state back to its start (zeros; an int8 state its zero point), as for a new video."""
        self._frames_seen = 0
        self._states = []
        for s in self._manifest.states:
            state = self._vm.empty(tuple(s.shape), s.dtype)
            self._vm.copy_in(state, np.full(s.shape, s.fill, dtype=s.dtype))
            self._states.append(state)

    def push(self, frames: np.ndarray) -> np.ndarray:
        """Run one clip of frames [B, T, H, W, 3] (float32 in [0, 1]); returns the logits."""
        self._check_frames(frames)
        frames = np.ascontiguousarray(frames)  # checked as the model gets it: a masked array's mask is not passed
        check_frame_values(frames, check_range=self._check_range)
        self._vm.copy_in(self._input, frames)
        out = self._main(self._input, *self._states)
        self._frames_seen += frames.shape[1]
        if not self._states:  # a model without states returns its logits tensor bare, not in a tuple
            return self._vm.copy_out(out)
        results = list(out)
        self._states = results[1:]
        return self._vm.copy_out(results[0])

    def watch_calls(self, hook: Callable[[str, bool], None] | None) -> None:
        """Call `hook(name, before)` before and after every call the model makes (its compiled functions
        and the VM's builtins: allocations, checks), in the pushes that follow; None stops. For profiling:
        each watched call costs a few microseconds of Python."""
        if hook is None:
            self._vm.set_instrument(None)
            return

        def instrument(func: Any, symbol: str, before: bool, ret: Any, *args: Any) -> int:
            hook(symbol, bool(before))
            return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

        self._vm.set_instrument(instrument)

    def _check_arch(self) -> None:
        built = self._manifest.target.arch
        here = machine_arch()
        if built != here:
            name = self._manifest.target.name
            raise ArtifactError(
                f"{self._dir}: built for target '{name}' ({built}), but this machine is {here}; "
                "run it on the board, or under emulation with `mvcompile run --emulate`"
            )

    def _load(self) -> RelaxVM:
        kind = self._manifest.target.kind
        dev = device(kind)
        if dev is None:
            raise ArtifactError(f"{self._dir}: needs a {kind} device, and none is available here")
        try:
            with quiet_tvm_stderr():
                vm = RelaxVM(self._dir / LIBRARY, dev)
                params = vm.param_names("main")
        except Exception as exc:
            raise ArtifactError(f"{self._dir / LIBRARY}: cannot load: {error_line(exc)}") from None
        expected = [self._frame.name, *(s.input for s in self._manifest.states)]
        if params != expected:
            raise ArtifactError(f"{self._dir / MANIFEST}: lists {len(expected)} inputs, but {LIBRARY}'s main takes "
                                f"{len(params)} (first difference: {_first_difference(expected, params)})")
        return vm

    def _check_frames(self, frames: Any) -> None:
        shape, dtype = tuple(self._frame.shape), np.dtype(self._frame.dtype)
        if not isinstance(frames, np.ndarray):
            raise FrameError(f"frames must be a numpy array of {dtype} {list(shape)}, got {type(frames).__name__}")
        if frames.dtype != dtype:
            raise FrameError(f"frames must be {dtype}, got {frames.dtype} (convert with frames.astype(np.{dtype}))")
        if frames.ndim != len(shape):
            raise FrameError(f"frames must have rank {len(shape)} {list(shape)} [B, T, H, W, C], got shape {list(frames.shape)}")
        if frames.shape != shape:
            raise FrameError(f"frames must have shape {list(shape)} [B, T, H, W, C], got {list(frames.shape)}")


def _first_difference(expected: list[str], got: list[str]) -> str:
    i = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    shown = lambda names: repr(names[i]) if i < len(names) else "nothing"  # noqa: E731
    return f"argument {i} is {shown(got)}, the manifest says {shown(expected)}"
