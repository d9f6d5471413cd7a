#!/usr/bin/env bash
# Prepare ARM cross-compilation and qemu-user emulation for mvcompile artifacts.
#
#   scripts/setup_cross.sh            # aarch64 and armv7
#   scripts/setup_cross.sh aarch64    # one architecture
#
# Idempotent and fast when already done. Per architecture it
#   1. installs the Debian cross toolchain, target libc/libstdc++, qemu-user and (aarch64) the target's libsodium for
#      the runner's signature check (multiarch: adds the Debian architecture arm64) (only if missing, needs root),
#   2. downloads the target wheels of apache-tvm / apache-tvm-ffi (versions pinned in constraints.txt) and
#      unpacks libtvm_runtime.so, libtvm_ffi.so and the tvm-ffi headers into $MVCOMPILE_CROSS_DIR/<arch>/
#      (default <repo>/.cache/cross/<arch>/{lib,include}).
# Once for all arches it builds qemu's instruction-counting TCG plugin (tests/plugin/insn.c) into
# $MVCOMPILE_CROSS_DIR/qemu-plugin/libinsn.so (bench/arm counts guest instructions with it). Debian ships neither
# the plugin nor qemu-plugin.h, so both come from Debian's source package of the installed qemu-user, fetched
# through a private deb-src list under that folder (the system's apt sources are left alone).
# PyPI has no armv7l wheels of apache-tvm, so armv7 gets the toolchain only and a NO_RUNTIME note: armv7
# artifacts can be built and checked (ELF 32-bit ARM) but not run here.
# Exit codes: 0 ok, 1 failure, 77 cannot install because not root (tests skip on this).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_DIR="${MVCOMPILE_CROSS_DIR:-$REPO/.cache/cross}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
if (($#)); then ARCHES=("$@"); else ARCHES=(aarch64 armv7); fi

PLUGIN_DIR="$CROSS_DIR/qemu-plugin"
PLUGIN_PACKAGES="libglib2.0-dev pkg-config gcc dpkg-dev"  # build the insn plugin; dpkg-source unpacks qemu's source
HOST_PACKAGES="libsodium-dev"  # the runner built for x86-64 (bench/arm counts x86 builds under qemu-x86_64)

log() { echo "setup_cross: $*" >&2; }
die() { log "error: $*"; exit 1; }

pin() {  # pin NAME -> version pinned in constraints.txt
    local v
    v="$(sed -n "s/^$1==\([^[:space:]]*\).*/\1/p" "$REPO/constraints.txt")"
    [[ -n "$v" ]] || die "no '$1==' pin in $REPO/constraints.txt"
    echo "$v"
}
TVM_VERSION="$(pin apache-tvm)"
FFI_VERSION="$(pin apache-tvm-ffi)"

apt_packages() {  # apt_packages ARCH -> Debian packages needed for ARCH
    case "$1" in
        aarch64) echo "g++-aarch64-linux-gnu libstdc++6-arm64-cross libc6-dev-arm64-cross qemu-user libsodium-dev:arm64" ;;
        armv7) echo "g++-arm-linux-gnueabihf libstdc++6-armhf-cross libc6-dev-armhf-cross qemu-user" ;;
    esac
}

wheel_platforms() {  # wheel_platforms ARCH -> pip --platform tags for ARCH
    case "$1" in
        aarch64) echo "manylinux_2_28_aarch64 manylinux2014_aarch64" ;;
        armv7) echo "manylinux_2_31_armv7l manylinux_2_28_armv7l manylinux2014_armv7l linux_armv7l" ;;
    esac
}

install_apt() {  # install_apt PKG... : apt-get install the packages that are not installed yet
    local missing=() p
    for p in $(printf '%s\n' "$@" | sort -u); do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $EUID -ne 0 ]]; then
        log "missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}"
        exit 77
    fi
    log "installing ${missing[*]}"
    local p_arch
    for p in "${missing[@]}"; do  # a foreign-architecture library (libsodium-dev:arm64: the runner's signature check)
        p_arch="${p#*:}"
        if [[ "$p" == *:* ]] && ! dpkg --print-foreign-architectures | grep -qx "$p_arch"; then
            log "adding Debian architecture $p_arch (multiarch) for $p"
            dpkg --add-architecture "$p_arch"
        fi
    done
    export DEBIAN_FRONTEND=noninteractive
    local lock=(-o DPkg::Lock::Timeout=600)  # another apt may be running on a shared machine
    apt-get "${lock[@]}" update -qq
    apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fetch_runtime() {  # fetch_runtime ARCH : download wheels and unpack runtime libs + headers
    local arch="$1" dest="$CROSS_DIR/$1" stamp="tvm=$TVM_VERSION ffi=$FFI_VERSION"
    [[ -x "$PYTHON" ]] || die "python not found at $PYTHON (run 'make setup' or set PYTHON)"
    if [[ -f "$dest/RUNTIME" && "$(cat "$dest/RUNTIME")" == "$stamp" ]]; then return 0; fi
    if [[ -f "$dest/NO_RUNTIME" && "$(head -n1 "$dest/NO_RUNTIME")" == "$stamp" ]]; then return 0; fi
    local wheels="$dest/wheels" plat_args=() p
    for p in $(wheel_platforms "$arch"); do plat_args+=(--platform "$p"); done
    mkdir -p "$wheels"
    log "downloading $arch wheels: apache-tvm==$TVM_VERSION apache-tvm-ffi==$FFI_VERSION"
    if ! "$PYTHON" -m pip download -q -d "$wheels" --only-binary=:all: "${plat_args[@]}" \
        --python-version 3.11 --implementation cp --abi cp311 --no-deps \
        "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" 2>"$dest/pip.log"; then
        if grep -q "No matching distribution" "$dest/pip.log"; then
            printf '%s\nPyPI has no %s wheel of apache-tvm==%s / apache-tvm-ffi==%s (%s).\n' \
                "$stamp" "$arch" "$TVM_VERSION" "$FFI_VERSION" "$(wheel_platforms "$arch")" >"$dest/NO_RUNTIME"
            rm -rf "$wheels" "$dest/pip.log"
            log "no $arch wheels on PyPI: $arch artifacts can be cross-built but not run (see $dest/NO_RUNTIME)"
            return 0
        fi
        cat "$dest/pip.log" >&2
        die "pip download failed for $arch"
    fi
    rm -rf "$dest/lib" "$dest/include"
    "$PYTHON" - "$wheels" "$dest" "$TVM_VERSION" "$FFI_VERSION" <<'EOF'
"""Unpack the runtime shared libraries and the tvm-ffi headers from the downloaded wheels."""
import pathlib, shutil, sys, zipfile
wheels, dest, tvm_v, ffi_v = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
def wheel(prefix: str) -> zipfile.ZipFile:
    found = sorted(wheels.glob(prefix))
    if len(found) != 1:
        sys.exit(f"setup_cross: error: expected one wheel {prefix} in {wheels}, found {found}")
    return zipfile.ZipFile(found[0])
tvm, ffi = wheel(f"apache_tvm-{tvm_v}-*.whl"), wheel(f"apache_tvm_ffi-{ffi_v}-*.whl")
wanted = [(tvm, "tvm/lib/libtvm_runtime.so", "lib/libtvm_runtime.so"),
          (ffi, "tvm_ffi/lib/libtvm_ffi.so", "lib/libtvm_ffi.so")]
wanted += [(ffi, n, n[len("tvm_ffi/"):]) for n in ffi.namelist()
           if n.startswith("tvm_ffi/include/") and not n.endswith("/") and "python" not in n]
for zf, member, target in wanted:
    out = dest / target
    out.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
    rm -rf "$wheels" "$dest/NO_RUNTIME" "$dest/pip.log"
    echo "$stamp" >"$dest/RUNTIME"
    log "$arch runtime ready in $dest"
}

deb_src_entries() {  # the system's Debian 'deb' entries as 'deb-src' entries (deb822 .sources and one-line .list)
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$1/$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$f" >>"$1/one-line.list"
    done
    return 0
}

build_insn_plugin() {  # qemu's insn plugin, built from the Debian source of the installed qemu-user (cached by version)
    local version out="$PLUGIN_DIR/libinsn.so"
    version="$(dpkg-query -W -f='${source:Version}' qemu-user)"
    if [[ -f "$out" && "$(cat "$PLUGIN_DIR/VERSION" 2>/dev/null)" == "$version" ]]; then return 0; fi
    local work="$PLUGIN_DIR/work"
    rm -rf "$work" && mkdir -p "$work/sources" "$work/lists/partial" "$work/cache"
    deb_src_entries "$work/sources"
    local apt=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources" -o "Dir::State::Lists=$work/lists"
               -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
    log "building qemu's insn plugin from Debian's source package qemu=$version"
    apt-get "${apt[@]}" update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update of the deb-src entries failed"; }
    (cd "$work" && apt-get "${apt[@]}" source -qq --download-only "qemu=$version" >>apt.log 2>&1) \
        || { cat "$work/apt.log" >&2; die "apt-get source --download-only qemu=$version failed"; }
    (cd "$work" && dpkg-source -x ./*.dsc src >>apt.log 2>&1) || { cat "$work/apt.log" >&2; die "dpkg-source -x of qemu failed"; }
    mkdir -p "$PLUGIN_DIR/include"
    cp "$work/src/include/qemu/qemu-plugin.h" "$PLUGIN_DIR/include/"
    cp "$work/src/tests/plugin/insn.c" "$PLUGIN_DIR/"
    rm -rf "$work"
    # shellcheck disable=SC2046  # pkg-config prints several flags
    gcc -O2 -shared -fPIC -I"$PLUGIN_DIR/include" $(pkg-config --cflags glib-2.0) "$PLUGIN_DIR/insn.c" \
        -o "$out.tmp" $(pkg-config --libs glib-2.0)
    mv "$out.tmp" "$out"
    echo "$version" >"$PLUGIN_DIR/VERSION"
    log "insn plugin ready: $out"
}

for arch in "${ARCHES[@]}"; do
    [[ "$arch" == aarch64 || "$arch" == armv7 ]] || die "unknown arch '$arch' (expected aarch64 or armv7)"
done
exec 9>>"$(mkdir -p "$CROSS_DIR" && echo "$CROSS_DIR/.lock")"
flock 9
pkgs=()
for arch in "${ARCHES[@]}"; do read -r -a more <<<"$(apt_packages "$arch")"; pkgs+=("${more[@]}"); done
read -r -a more <<<"$PLUGIN_PACKAGES $HOST_PACKAGES"; pkgs+=("${more[@]}")
install_apt "${pkgs[@]}"
for arch in "${ARCHES[@]}"; do fetch_runtime "$arch"; done
build_insn_plugin
