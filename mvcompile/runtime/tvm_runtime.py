"""TVM's runtime library alone: `libtvm_runtime.so` (3 MB) through tvm-ffi, never the compiler.

`import tvm` loads the 259 MB compiler library and its Python packages even to run a model, and tvm-ffi
imports torch and ml_dtypes whenever they are installed (for dtype conversions a model run never needs). A
process that only runs artifacts loads tvm-ffi without them, then the runtime library, then model.so: about
0.2 s and 40 MB instead of 2-3 s and 200-400 MB. Inside a process that already imported tvm (a build
followed by a run), the same calls go to the libraries already loaded.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mvcompile.errors import MvcompileError

RUNTIME_LIBRARY = "libtvm_runtime.so"
_SKIPPED = ("torch", "ml_dtypes")  # tvm-ffi imports these when present; running a model needs neither
POOLED_ALLOCATOR = 2  # vm_initialization's allocator kinds: 1 naive, 2 pooled (reuses freed blocks)
_CPU = 1  # DLPack's kDLCPU
_loaded: ModuleType | None = None


class RuntimeLibraryError(MvcompileError, RuntimeError):
    """TVM's runtime library cannot be found or loaded."""


def runtime_library() -> Path:
    """The path of libtvm_runtime.so: in $TVM_LIBRARY_PATH, else in the installed apache-tvm package."""
    folders = [Path(p) for p in os.environ.get("TVM_LIBRARY_PATH", "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("tvm")  # finds the package without running its __init__ (the compiler)
    folders += [Path(p) / "lib" for p in (spec.submodule_search_locations or []) if spec is not None]
    for folder in folders:
        if (folder / RUNTIME_LIBRARY).is_file():
            return folder / RUNTIME_LIBRARY
    where = ", ".join(str(f) for f in folders) or "nowhere: the apache-tvm package is not installed"
    raise RuntimeLibraryError(f"{RUNTIME_LIBRARY} not found (looked in {where}); install apache-tvm "
                              "(`pip install mvcompile` brings it)")


def ffi() -> ModuleType:
    """tvm_ffi with TVM's runtime library loaded (once per process)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> ModuleType:
    hidden = [name for name in _SKIPPED if name not in sys.modules] if "tvm_ffi" not in sys.modules else []
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError: tvm-ffi goes on without
    try:
        tvm_ffi = importlib.import_module("tvm_ffi")
    finally:
        for name in hidden:
            sys.modules.pop(name, None)  # a later `import torch` by the user works as usual
    if "tvm" not in sys.modules:  # `import tvm` loaded it already
        path = runtime_library()
        try:
            ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)  # as tvm does: model.so links against its symbols
        except OSError as exc:
            raise RuntimeLibraryError(f"{path}: cannot load: {exc}") from None
    return tvm_ffi


def device(kind: str) -> Any | None:
    """Device 0 of a target kind (`llvm` is the CPU), or None when this machine has none."""
    f = ffi()
    dev = f.device("cpu" if kind == "llvm" else kind, 0)
    exists = f.get_global_func("runtime.GetDeviceAttr")  # attribute 0: kExist
    return dev if dev.dlpack_device_type() == _CPU or exists(dev.dlpack_device_type(), 0, 0) else None


class RelaxVM:
    """A Relax VM executable of a compiled library, initialised on one device (plus the CPU for shapes)."""

    def __init__(self, library: Path, dev: Any) -> None:
        f = ffi()
        self.device = dev
        module = f.load_module(str(Path(library).resolve()))  # dlopen needs a path with a '/'
        self.module = module["vm_load_executable"]()
        init = [dev.dlpack_device_type(), dev.index, POOLED_ALLOCATOR]
        if dev.dlpack_device_type() != _CPU:
            init += [_CPU, 0, POOLED_ALLOCATOR]
        self.module["vm_initialization"](*init)
        self._alloc = f.get_global_func("runtime.TVMTensorAllocWithScope")
        self._copy_in = f.get_global_func("runtime.TVMTensorCopyFromBytes")
        self._copy_out = f.get_global_func("runtime.TVMTensorCopyToBytes")

    def function(self, name: str) -> Any:
        """A VM function by name (`main`)."""
        return self.module[name]

    def param_names(self, name: str) -> list[str]:
        """The parameter names of a VM function."""
        count = self.module["get_function_arity"](name)
        return [self.module["get_function_param_name"](name, i) for i in range(count)]

    def set_instrument(self, instrument: Any) -> None:
        """Call `instrument(func, symbol, before, ret, *args)` around every VM call (None stops)."""
        self.module["set_instrument"](instrument)

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        """A tensor on the VM's device (TVM's allocator aligns it as compiled kernels assume)."""
        return self._alloc(ffi().Shape(shape), dtype, self.device, None)

    def copy_in(self, tensor: Any, array: np.ndarray) -> None:
        """Copy a C-contiguous array of the tensor's size and dtype into the tensor."""
        self._copy_in(tensor, ctypes.c_void_p(array.ctypes.data), array.nbytes)

    def copy_out(self, tensor: Any) -> np.ndarray:
        """A numpy copy of a tensor."""
        array = np.empty(tuple(tensor.shape), dtype=str(tensor.dtype))
        self._copy_out(tensor, ctypes.c_void_p(array.ctypes.data), array.nbytes)
        return array
