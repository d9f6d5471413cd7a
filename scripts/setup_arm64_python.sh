#!/usr/bin/env bash
# An emulated aarch64 "board": Debian arm64 Python 3.11 run by qemu-aarch64, with the aarch64 wheels of
# apache-tvm (versions from constraints.txt), so `python -m tvm.exec.rpc_server` runs as it would on a
# Raspberry Pi; extra requirements (e.g. the aarch64 ai-edge-litert and onnxruntime wheels that
# `make bench-arm` counts) can be added. Needs `make cross` first (qemu-user).
#
#   scripts/setup_arm64_python.sh                        # prints the path of the wrapper: <dir>/bin/python3
#   scripts/setup_arm64_python.sh onnxruntime==1.32.0    # the same, with these requirements installed too
#
# Idempotent: the Debian root is unpacked once (about 1 minute, 250 MB); the packages live in <dir>/site,
# listed in <dir>/READY, and are reinstalled (into a fresh folder, then swapped in) only when a requirement
# is missing; requirements installed before are kept. No binfmt_misc/chroot is needed: the Debian packages
# are unpacked with dpkg -x, and sitecustomize.py points sys.executable at the qemu wrapper so TVM's popen
# workers start under qemu too. Exit 77 if not root and debootstrap is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_DIR="${MVCOMPILE_CROSS_DIR:-$REPO/.cache/cross}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
DEST="$CROSS_DIR/aarch64/python"
TVM_PINS="$(sed -n 's/^\(apache-tvm[a-z-]*==[^[:space:]]*\).*/\1/p' "$REPO/constraints.txt" | tr '\n' ' ')"
BASE_REQUIREMENTS=(apache-tvm apache-tvm-ffi numpy ml_dtypes typing_extensions psutil cloudpickle tornado)

log() { echo "setup_arm64_python: $*" >&2; }

command -v qemu-aarch64 >/dev/null || { log "qemu-aarch64 missing: run 'make cross' first"; exit 1; }
mkdir -p "$DEST"
exec 9>>"$DEST/.lock"
flock 9

# The packages to have: the base set, those installed before (same TVM pins), and the arguments.
wanted=("${BASE_REQUIREMENTS[@]}" "$@")
if [[ -f "$DEST/READY" && "$(head -n1 "$DEST/READY")" == "$TVM_PINS" ]]; then
    mapfile -t -O "${#wanted[@]}" wanted < <(tail -n +2 "$DEST/READY")
fi
mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort -u)
if [[ -f "$DEST/READY" && -x "$DEST/bin/python3" ]] \
    && [[ "$(printf '%s\n' "$TVM_PINS" "${wanted[@]}")" == "$(cat "$DEST/READY")" ]]; then
    echo "$DEST/bin/python3"
    exit 0
fi

if [[ ! -f "$DEST/root/ROOT_READY" ]]; then
    if ! command -v debootstrap >/dev/null; then
        [[ $EUID -eq 0 ]] || { log "debootstrap missing; run as root: apt-get install debootstrap"; exit 77; }
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    MIRROR="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    rm -rf "$DEST/root"
    log "debootstrap arm64 python3.11 from $MIRROR"
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3.11,libpython3.11-stdlib,ca-certificates bookworm "$DEST/root" "$MIRROR" >"$DEST/debootstrap.log" 2>&1
    for deb in "$DEST"/root/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$DEST/root"; done
    rm -rf "$DEST"/root/var/cache/apt/archives/*.deb
    touch "$DEST/root/ROOT_READY"
fi

log "installing the aarch64 wheels: ${wanted[*]}"
rm -rf "$DEST/site.new"
"$PYTHON" -m pip install -q --target "$DEST/site.new" --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 -c "$REPO/constraints.txt" "${wanted[@]}"
echo "import sys; sys.executable = '$DEST/bin/python3'" >"$DEST/site.new/sitecustomize.py"
rm -rf "$DEST/site" && mv "$DEST/site.new" "$DEST/site"

mkdir -p "$DEST/bin"
cat >"$DEST/bin/python3" <<EOF
#!/bin/sh
exec qemu-aarch64 -L "$DEST/root" -E PYTHONPATH="$DEST/site" "$DEST/root/usr/bin/python3.11" "\$@"
EOF
chmod +x "$DEST/bin/python3"
"$DEST/bin/python3" -c "import platform; assert platform.machine() == 'aarch64'"
printf '%s\n' "$TVM_PINS" "${wanted[@]}" >"$DEST/READY"
echo "$DEST/bin/python3"
