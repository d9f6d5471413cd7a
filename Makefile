# mvcompile: every target creates the virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-quick test-slow cross clean bench bench-arm runtime-lib

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[compile,test]'
	touch $(STAMP)

setup: $(STAMP)

# The main job on an embedded default: build A0-Stream for this machine, stream a clip through it.
demo: setup
	$(VENV)/bin/mvcompile build specs/a0.yaml --variant stream --target host --seed 0 -o build/a0-stream-host
	$(VENV)/bin/mvcompile run build/a0-stream-host --frames 20

# Both cores: two pytest-xdist workers, each test file on one of them (its module fixtures run once).
PYTEST_N := -n 2 --dist loadfile

test: setup cross
	$(PY) -m pytest -q $(PYTEST_N) --durations=25

# The quick loop while changing code: the default suite without the session's tuning run (`tune`), the
# end-to-end benches (`bench`) and qemu (`qemu`); `make test` runs them all (markers: pyproject.toml).
test-quick: setup
	$(PY) -m pytest -q $(PYTEST_N) -m "not slow and not tune and not bench and not qemu"

test-slow: setup cross
	$(PY) -m pytest -q -m slow

# Benchmarks (bench/x86/run.py): results in a new folder bench/results/runs/<date-time>/. ARGS="--quick", "--db DIR",
# "--reference" (a full run that replaces the committed bench/results/ the README quotes).
bench: setup
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) -m bench.x86.run $(ARGS)

# ARM instruction counts under qemu (bench/arm/run.py), a proxy for speed on a Raspberry Pi 4/5: results in a new
# folder bench/results/arm/runs/<date-time>/. ARGS="--quick", "--validate-x86" (check the proxy on x86), "--db DIR".
bench-arm: setup cross
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) -m bench.arm.run $(ARGS)

# ARM cross toolchain, qemu-user, aarch64 TVM runtime libs and qemu's insn plugin (scripts/setup_cross.sh; needs
# root on first run).
cross: setup
	PYTHON=$(PY) scripts/setup_cross.sh

# The C runtime for a board without Python (deploy/README.md): libmvc.so + mvc.h (the C API), lib/ with TVM's runtime
# libraries, and the camera-loop example, cross-compiled into $(RUNTIME_OUT). ARCH=aarch64 (default) or armv7.
ARCH ?= aarch64
RUNTIME_OUT ?= build/runtime-lib/$(ARCH)
runtime-lib: cross
	$(PY) -c "import sys; from pathlib import Path; from mvcompile.support.cross import build_runtime_lib, get_arch; \
	print(*build_runtime_lib(get_arch(sys.argv[1]), Path(sys.argv[2])), sep='\n')" $(ARCH) $(RUNTIME_OUT)

clean:
	rm -rf build .pytest_cache
