"""ARM cross toolchains, qemu-user, and the cross-compiled C runtime: the C API library libmvc.so (mvc.h, mvc.cc)
and the runner and camera-loop example built on it (shipped as package data in mvcompile/data/runner/; deploy/
in the repository). Builds are cached by a hash of the sources and flags."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mvcompile.data import data_path
from mvcompile.errors import MvcompileError
from mvcompile.support.files import staged_files

CHECKOUT = Path(__file__).resolve().parents[2]  # the source checkout, when running from one
RUNNER_SOURCE = data_path("runner", "runner.cc")
RUNTIME_SOURCE = data_path("runner", "mvc.cc")  # the C API (mvc.h) the runner and the example are built on
RUNTIME_HEADER = data_path("runner", "mvc.h")
EXAMPLE_SOURCE = data_path("runner", "camera_loop.c")
SETUP_HINT = ("run `make cross` (or scripts/setup_cross.sh, as root; with MVCOMPILE_CROSS_DIR set to the same folder "
              "when mvcompile is installed from a wheel) first")
CXXFLAGS = ("-std=c++17", "-O2", "-Wall")
SODIUM = ("-Wl,-Bstatic", "-lsodium", "-Wl,-Bdynamic")  # the runner's Ed25519 and SHA-256, static: nothing to install
LDLIBS = ("-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", *SODIUM)


class EmulationError(MvcompileError, RuntimeError):
    """The ARM toolchain, qemu or TVM runtime is missing, or the emulated run failed."""


@dataclass(frozen=True)
class CrossArch:
    """A board architecture as named in an artifact manifest (`target.arch`)."""

    name: str
    triple: str  # GNU triple: toolchain prefix and Debian sysroot /usr/<triple>
    qemu: str

    @property
    def cxx(self) -> str:
        """The Debian cross C++ compiler."""
        return f"{self.triple}-g++"

    @property
    def sysroot(self) -> Path:
        """Target libc/libstdc++ that qemu-user loads (`-L`)."""
        return Path("/usr") / self.triple

    @property
    def root(self) -> Path:
        """This arch's cache dir: lib/ and include/ from the TVM wheels, bin/ with the runner."""
        return cross_dir() / self.name

    @property
    def libdir(self) -> Path:
        """Directory with libtvm_runtime.so and libtvm_ffi.so for this arch."""
        return self.root / "lib"


ARCHES = {
    "aarch64": CrossArch("aarch64", "aarch64-linux-gnu", "qemu-aarch64"),
    "armv7": CrossArch("armv7", "arm-linux-gnueabihf", "qemu-arm"),
}


def cross_dir() -> Path:
    """Cache root: $MVCOMPILE_CROSS_DIR, else <checkout>/.cache/cross when running from a source checkout
    (as in scripts/setup_cross.sh), else ~/.cache/mvcompile/cross."""
    if os.environ.get("MVCOMPILE_CROSS_DIR"):
        return Path(os.environ["MVCOMPILE_CROSS_DIR"]).absolute()
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT / ".cache" / "cross"
    return Path.home() / ".cache" / "mvcompile" / "cross"


def get_arch(name: str) -> CrossArch:
    """The CrossArch for a manifest `target.arch`."""
    if name not in ARCHES:
        raise EmulationError(f"cannot emulate arch {name!r}: supported are {', '.join(ARCHES)}")
    return ARCHES[name]


def check_ready(arch: CrossArch) -> None:
    """Raise EmulationError naming what is missing to cross-build and run for arch."""
    for tool in (arch.cxx, arch.qemu):
        if shutil.which(tool) is None:
            raise EmulationError(f"{tool} not found: {SETUP_HINT}")
    if not (arch.sysroot / "lib").is_dir():
        raise EmulationError(f"{arch.name} sysroot {arch.sysroot} missing: {SETUP_HINT}")
    no_runtime = arch.root / "NO_RUNTIME"
    if no_runtime.is_file():
        note = " ".join(no_runtime.read_text().splitlines()[1:])
        raise EmulationError(f"no TVM runtime for {arch.name}: {note} Build libtvm_runtime.so and libtvm_ffi.so "
                             f"from source and put them in {arch.libdir} (headers in {arch.root / 'include'}).")
    for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
        if not (arch.libdir / lib).is_file():
            raise EmulationError(f"{arch.libdir / lib} missing: {SETUP_HINT}")
    if not (arch.root / "include" / "tvm" / "ffi").is_dir():
        raise EmulationError(f"tvm-ffi headers missing in {arch.root / 'include'}: {SETUP_HINT}")
    if not (Path("/usr/lib") / arch.triple / "libsodium.a").is_file():
        raise EmulationError(f"libsodium for {arch.name} missing (Debian's libsodium-dev for that architecture, which "
                             f"the runner verifies signatures with): {SETUP_HINT}")


def _cached_build(arch: CrossArch, stem: str, sources: list[Path], flags: tuple[str, ...]) -> Path:
    """`arch.cxx` over `sources` into bin/<stem>-<hash>, once per content of sources and flags (old builds of
    the same stem removed; a lock keeps two processes from building it at once)."""
    check_ready(arch)
    key = hashlib.sha256(b"".join(p.read_bytes() for p in (*sources, RUNTIME_HEADER)))
    key.update(" ".join((arch.cxx, *CXXFLAGS, *flags, *LDLIBS)).encode())
    bindir = arch.root / "bin"
    exe = bindir / f"{stem}-{key.hexdigest()[:16]}"
    if exe.is_file():
        return exe
    bindir.mkdir(parents=True, exist_ok=True)
    with open(bindir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.is_file():
            return exe
        for old in bindir.glob(f"{stem}-*"):
            old.unlink()
        with staged_files([exe]) as (tmp,):
            cmd = [arch.cxx, *CXXFLAGS, *flags, *map(str, sources), "-isystem", str(arch.root / "include"),
                   "-L", str(arch.libdir), *LDLIBS, "-o", str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise EmulationError(f"cross-compiling {sources[0].name} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return exe


def build_runner(arch: CrossArch) -> Path:
    """The runner for arch (runner.cc over the C API, linked in), cross-compiled once."""
    return _cached_build(arch, "mvcompile-runner", [RUNNER_SOURCE, RUNTIME_SOURCE], ())


def build_runtime_lib(arch: CrossArch, out: Path) -> list[Path]:
    """The C runtime for a board in `out`: libmvc.so, mvc.h, the camera-loop example linked against libmvc.so
    (rpath $ORIGIN and $ORIGIN/lib) and lib/ with the TVM runtime libraries it needs."""
    shared = ("-shared", "-fPIC", "-Wl,-soname,libmvc.so", "-Wl,-rpath,$ORIGIN/lib")
    library = _cached_build(arch, "libmvc.so", [RUNTIME_SOURCE], shared)
    files = {out / "libmvc.so": library, out / "mvc.h": RUNTIME_HEADER,
             **{out / "lib" / name: arch.libdir / name for name in ("libtvm_runtime.so", "libtvm_ffi.so")}}
    (out / "lib").mkdir(parents=True, exist_ok=True)
    with staged_files(list(files)) as staged:
        for tmp, source in zip(staged, files.values()):
            shutil.copy2(source, tmp)
    example = out / "camera_loop"
    with staged_files([example]) as (tmp,):
        cmd = [arch.cxx.replace("g++", "gcc"), "-std=c11", "-O2", "-Wall", str(EXAMPLE_SOURCE), "-I", str(out),
               "-L", str(out), "-Wl,--no-as-needed", "-lmvc", "-Wl,-rpath,$ORIGIN:$ORIGIN/lib", "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EmulationError(f"cross-compiling {EXAMPLE_SOURCE.name} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return [*files, example]
