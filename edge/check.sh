#!/usr/bin/env bash
# make edge-check: score artifacts under an emulated aarch64 Debian with the aarch64 onnxruntime wheel and
# compare with x86 scores: max abs difference <= EDGE_TOL (default 1e-5) for FP32 and legacy graphs and
# <= EDGE_TOL_INT8 (default 1e-3) for INT8 ones (7-bit weights make x86 and ARM compute the same integers).
#
# Route (../shared/notes/arm-emulation.md): qemu-user-static with binfmt_misc registered here and unregistered
# on exit; a debootstrap arm64 minbase root filesystem, cached as a tarball; aarch64 wheels downloaded on the
# host for manylinux_2_28_aarch64 and installed offline (`pip install aeguard[cpu]`, so torch is absent).
# Needs root. Emulated speed is not ARM speed: the timings printed here are for this check only.
#
# Environment: PY (host python with aeguard[train], default .venv/bin/python), EDGE_CACHE (cache folder,
# default ~/.cache/aeguard/edge), EDGE_DETECTORS (comma list of names or specs such as "apre(n_members=3)";
# default every exportable detector), EDGE_TOL, EDGE_TOL_INT8, DEBIAN_MIRROR (default: the mirror apt uses),
# EDGE_KEEP=1 keeps the work folder.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
CACHE="${EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aeguard/edge}"
TOL="${EDGE_TOL:-1e-5}"
TOL_INT8="${EDGE_TOL_INT8:-1e-3}"
SUITE=bookworm
START=$SECONDS

# the base requirements (no extras) of a wheel, one per line
wheel_requirements() {
    "$PY" -c 'import sys, zipfile
whl = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
reqs = [l.split(":", 1)[1].strip() for l in whl.read(meta).decode().splitlines() if l.startswith("Requires-Dist:")]
print("\n".join(sorted(r for r in reqs if "extra ==" not in r)))' "$1"
}
log() { printf '[edge-check %4ss] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'edge-check: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (binfmt_misc registration, debootstrap, chroot)"
[ "$(uname -m)" = x86_64 ] || die "runs on an x86_64 host (it emulates aarch64)"
[ -x "$PY" ] || die "host python $PY not found; run 'make install-demo' first or set PY"

WORK="$(mktemp -d /tmp/aeguard-edge-check.XXXXXX)"
ROOT="$WORK/rootfs"
BINFMT=/proc/sys/fs/binfmt_misc
MOUNTED_BINFMT=0
REGISTERED=0

cleanup() {
    local rc=$?
    set +e
    if mountpoint -q "$ROOT/proc" 2>/dev/null; then
        umount "$ROOT/proc" || umount -l "$ROOT/proc"
    fi
    if [ "$REGISTERED" = 1 ] && [ -e "$BINFMT/qemu-aarch64" ]; then
        echo -1 > "$BINFMT/qemu-aarch64"
    fi
    if [ "$MOUNTED_BINFMT" = 1 ]; then
        umount "$BINFMT"
    fi
    if mountpoint -q "$ROOT/proc" 2>/dev/null; then
        echo "edge-check: $ROOT/proc is still mounted; leaving $WORK in place" >&2
    elif [ "${EDGE_KEEP:-0}" = 1 ]; then
        echo "edge-check: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ----------------------------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null || [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    log "installing qemu-user-static and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi

# --- binfmt_misc: register aarch64 (undone on exit) ---------------------------------------------------------
if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT"
    MOUNTED_BINFMT=1
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > "$BINFMT/register"
    REGISTERED=1
fi
log "aarch64 binfmt handler: $(head -1 "$BINFMT/qemu-aarch64")"

# --- host: artifacts, x86 scores, wheels ----------------------------------------------------------------
mkdir -p "$CACHE" "$WORK/wheels"
log "fitting small artifacts on the host (FP32, INT8, legacy per exportable detector)"
"$PY" -m aeguard.edge.check_score make "$WORK/job" ${EDGE_DETECTORS:+--detectors "$EDGE_DETECTORS"}
"$PY" -m aeguard.edge.check_score score "$WORK/job" "$WORK/x86" 2>/dev/null

log "building the aeguard wheel (from a copy of the working tree, so no build/ lands in the repo)"
mkdir -p "$WORK/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null) \
    | tar -C "$WORK/src" -xf -
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheels" "$WORK/src" >/dev/null 2>&1 \
    || "$PY" -m pip wheel -q --no-deps -w "$WORK/wheels" "$WORK/src" >/dev/null
AEGUARD_WHEEL="$(ls "$WORK"/wheels/aeguard-*.whl)"

# Third-party aarch64 wheels: what `aeguard[cpu]` needs, onnxruntime and numpy pinned to the host's versions
# so both sides run the same kernels' code. Cached per requirement set.
ORT_VERSION="$("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)')"
NP_VERSION="$("$PY" -c 'import numpy; print(numpy.__version__)')"
PD_VERSION="$("$PY" -c 'import pandas; print(pandas.__version__)')"
REQS="$(wheel_requirements "$AEGUARD_WHEEL"
        printf '%s\n' "onnxruntime==$ORT_VERSION" "numpy==$NP_VERSION" "pandas==$PD_VERSION")"
KEY="$(printf '%s\n' "$REQS" | sha256sum | cut -c1-16)"
WHEELS="$CACHE/wheels-$KEY"
if [ ! -e "$WHEELS/.complete" ]; then
    log "downloading aarch64 wheels (manylinux_2_28_aarch64, cp311) into $WHEELS"
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    mapfile -t REQ_LIST < <(printf '%s\n' "$REQS")
    "$PY" -m pip download -q --platform manylinux_2_28_aarch64 --only-binary=:all: --python-version 3.11 \
        --implementation cp -d "$WHEELS" "${REQ_LIST[@]}"
    touch "$WHEELS/.complete"
fi

# --- aarch64 root filesystem (cached) ---------------------------------------------------------------------
BASE_TAR="$CACHE/rootfs-$SUITE-arm64.tar"
if [ ! -s "$BASE_TAR" ]; then
    MIRROR="${DEBIAN_MIRROR:-$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
              /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
              | grep -oE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' | head -1 | awk '{print $2}' || true)}"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    log "debootstrap arm64 $SUITE minbase from $MIRROR (cold cache; a few minutes)"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$WORK/bootstrap" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    tar -C "$WORK/bootstrap" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$WORK/bootstrap"
fi
mkdir -p "$ROOT"
log "unpacking the cached root filesystem"
tar -C "$ROOT" -xf "$BASE_TAR"
mount -t proc proc "$ROOT/proc"   # only /proc: mounting /sys makes onnxruntime crash under this QEMU
[ "$(chroot "$ROOT" uname -m)" = aarch64 ] || die "the chroot does not run as aarch64"

VENV_TAR="$CACHE/venv-$KEY.tar"
if [ -s "$VENV_TAR" ]; then
    log "unpacking the cached aarch64 venv (aeguard[cpu] dependencies)"
    tar -C "$ROOT" -xf "$VENV_TAR"
else
    log "creating the aarch64 venv and installing aeguard[cpu] offline"
    mkdir -p "$ROOT/wheels"
    cp "$WHEELS"/*.whl "$AEGUARD_WHEEL" "$ROOT/wheels/"
    chroot "$ROOT" python3 -m venv /venv
    chroot "$ROOT" /venv/bin/pip install -q --no-index --find-links /wheels "aeguard[cpu]"
    chroot "$ROOT" /venv/bin/pip uninstall -q -y aeguard
    rm -rf "$ROOT/wheels"
    tar -C "$ROOT" -cf "$VENV_TAR.tmp" venv && mv "$VENV_TAR.tmp" "$VENV_TAR"
fi
mkdir -p "$ROOT/wheels"
cp "$AEGUARD_WHEEL" "$ROOT/wheels/"
chroot "$ROOT" /venv/bin/pip install -q --no-index --no-deps --force-reinstall "/wheels/$(basename "$AEGUARD_WHEEL")"
if chroot "$ROOT" /venv/bin/python -c 'import torch' 2>/dev/null; then
    die "torch is importable in the aarch64 edge venv; it must not be"
fi
log "aarch64 venv: $(chroot "$ROOT" /venv/bin/python -c 'import platform, onnxruntime, numpy; \
print(platform.machine(), "python", platform.python_version(), "onnxruntime", onnxruntime.__version__, \
"numpy", numpy.__version__)' 2>/dev/null), installed size $(du -sh "$ROOT/venv" | cut -f1), no torch"

# --- score under emulation and compare ------------------------------------------------------------------
cp -r "$WORK/job" "$ROOT/job"
log "scoring under emulation (aeguard-edge code in one process; onnxruntime's cpuinfo warning is harmless)"
chroot "$ROOT" /venv/bin/python -m aeguard.edge.check_score score /job /job/arm 2> "$WORK/arm-stderr.log" \
    || { grep -v cpuinfo "$WORK/arm-stderr.log" >&2; die "scoring under emulation failed"; }
FIRST="$(ls "$ROOT/job/artifacts" | head -1)"
log "console script: aeguard-edge info + score on $FIRST"
chroot "$ROOT" /venv/bin/aeguard-edge info "/job/artifacts/$FIRST" 2>/dev/null | sed 's/^/    /'
chroot "$ROOT" /venv/bin/aeguard-edge score "/job/artifacts/$FIRST" /job/data.csv -o /job/cli.csv --device cpu \
    2>/dev/null
cmp -s "$ROOT/job/cli.csv" "$ROOT/job/arm/$FIRST.csv" || die "aeguard-edge score (console script) output differs"

mkdir -p "$REPO/.cache"
"$PY" -m aeguard.edge.check_score compare "$WORK/x86" "$ROOT/job/arm" --tol "$TOL" --tol-int8 "$TOL_INT8" \
    --json "$REPO/.cache/edge-check.json"
log "edge-check passed in $((SECONDS - START)) s (emulated: no ARM timing is implied)"
