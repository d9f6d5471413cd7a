#!/usr/bin/env bash
# An emulated aarch64 "board" for RPC tests: Debian arm64 Python 3.11 run by qemu-aarch64, with the
# aarch64 wheels of apache-tvm (versions from constraints.txt), so `python -m tvm.exec.rpc_server` runs
# as it would on a Raspberry Pi. Needs `make cross` first (qemu-user, the cached aarch64 wheels).
#
#   scripts/setup_arm64_python.sh      # prints the path of the wrapper: <dir>/bin/python3
#
# Idempotent (a stamp file). About 1 minute and 250 MB the first time. No binfmt_misc/chroot is needed:
# the Debian packages are unpacked with dpkg -x, and sitecustomize.py points sys.executable at the
# qemu wrapper so TVM's popen workers start under qemu too. Exit 77 if not root and debootstrap is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_DIR="${MVCOMPILE_CROSS_DIR:-$REPO/.cache/cross}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
DEST="$CROSS_DIR/aarch64/python"
WHEELS="$CROSS_DIR/aarch64/wheels"
STAMP="$(sed -n 's/^\(apache-tvm[a-z-]*==[^[:space:]]*\).*/\1/p' "$REPO/constraints.txt" | tr '\n' ' ')"

log() { echo "setup_arm64_python: $*" >&2; }

if [[ -f "$DEST/READY" && "$(cat "$DEST/READY")" == "$STAMP" ]]; then echo "$DEST/bin/python3"; exit 0; fi
command -v qemu-aarch64 >/dev/null || { log "qemu-aarch64 missing: run 'make cross' first"; exit 1; }
ls "$WHEELS"/apache_tvm-*.whl >/dev/null 2>&1 || { log "no aarch64 TVM wheels in $WHEELS: run 'make cross' first"; exit 1; }
if ! command -v debootstrap >/dev/null; then
    [[ $EUID -eq 0 ]] || { log "debootstrap missing; run as root: apt-get install debootstrap"; exit 77; }
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >/dev/null
fi
MIRROR="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

rm -rf "$DEST" && mkdir -p "$DEST/bin"
log "debootstrap arm64 python3.11 from $MIRROR"
debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3.11,libpython3.11-stdlib,ca-certificates bookworm "$DEST/root" "$MIRROR" >"$DEST/debootstrap.log" 2>&1
for deb in "$DEST"/root/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$DEST/root"; done
rm -rf "$DEST"/root/var/cache/apt/archives/*.deb

log "installing the aarch64 wheels"
"$PYTHON" -m pip install -q --target "$DEST/site" --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 -c "$REPO/constraints.txt" \
    "$WHEELS"/apache_tvm-*.whl "$WHEELS"/apache_tvm_ffi-*.whl numpy ml_dtypes typing_extensions psutil cloudpickle tornado

cat >"$DEST/bin/python3" <<EOF
#!/bin/sh
exec qemu-aarch64 -L "$DEST/root" -E PYTHONPATH="$DEST/site" "$DEST/root/usr/bin/python3.11" "\$@"
EOF
chmod +x "$DEST/bin/python3"
echo "import sys; sys.executable = '$DEST/bin/python3'" >"$DEST/site/sitecustomize.py"
"$DEST/bin/python3" -c "import platform; assert platform.machine() == 'aarch64'"
echo "$STAMP" >"$DEST/READY"
echo "$DEST/bin/python3"
