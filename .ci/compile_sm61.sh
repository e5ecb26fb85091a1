#!/usr/bin/env bash
# Compile every csrc/**/*.cu for Pascal (sm_61, the GTX 1080 Ti), Volta (sm_70) and Turing (sm_75),
# which CUDA 13's nvcc can no longer target. clang compiles the real .cu files (device side only)
# against a CUDA 12.9 header tree assembled from NVIDIA's pip wheels, and ptxas 12.9 (from the
# nvcc wheel) turns the PTX into cubins and reports registers and spills. Run `--help` for details.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: .ci/compile_sm61.sh [--archs LIST] [--python PY] [--jobs N] [--out DIR] [--rebuild] [--no-install]
                           [-h|--help]

Compiles every csrc/**/*.cu for sm_61, sm_70 and sm_75 with clang (device code only, -O3, C++20,
the macros setup.py passes), assembles each PTX into a cubin with ptxas 12.9 -v, and prints a
per-kernel table for sm_61 (registers, spill stores/loads, static shared memory, stack) plus one
summary line per arch. Exits non-zero on any clang or ptxas error. Nothing runs on a GPU.

What it needs, installed when missing (unless --no-install):
  clang     clang++-16 (`apt-get install clang-16`; needs root or passwordless sudo);
            $CLANG overrides the compiler (clang >= 15).
  CUDA 12.9 headers, ptxas and libdevice from NVIDIA's cu12 wheels (cudart, cccl, nvcc, cuBLAS,
            cuSOLVER, cuSPARSE, cuRAND; pinned versions and sha256 hashes, x86_64), downloaded
            with pip and unpacked (include/, bin/ptxas, nvvm/libdevice only: ~60 MB) into
            $HYBRIDOPS_SM61_CACHE/cuda (default ~/.cache/hybridops/cuda-12.9.1-clang). The
            wheels themselves (~1.4 GB) are deleted after unpacking.
  torch     the headers of the torch that --python imports.

Each (file, arch) result is kept in $HYBRIDOPS_SM61_CACHE/results under the sha256 of its
preprocessed source, flags and tool versions, and reused while they do not change (results unused
for 30 days are deleted).

Options:
  --archs LIST  the archs, space-separated (default: "sm_61 sm_70 sm_75"); the first gets the table.
  --python PY   Python whose torch headers are compiled against and whose pip downloads the wheels
                (default: $HYBRIDOPS_TORCH_PYTHON, else .venv/bin/python, else python3).
  --jobs N      parallel compiles (default: $MAX_JOBS, else the number of cores).
  --out DIR     where the PTX, cubins and logs go (default: build/compile_sm61).
  --rebuild     compile everything, ignoring cached results.
  --no-install  fail instead of installing clang or downloading the wheels.
  -h, --help    this text.

Times on the project's shared 2-core machine: ~35 s to install clang-16 and ~25 s for the CUDA
tree from nothing; the 6 compiles take 4-7 min of wall time there (~4 min of CPU; mostly parsing the
torch headers and optimizing mixed_depthwise_conv2d's kernels); ~15 s when every result is cached.
EOF
}

# ---- arguments (checked before anything is installed or downloaded) ----
PYTHON=${HYBRIDOPS_TORCH_PYTHON:-}
JOBS=${MAX_JOBS:-}
OUT=build/compile_sm61
INSTALL=1
REBUILD=0
ARCHS=(sm_61 sm_70 sm_75)
bad_usage() { echo "compile_sm61.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --python|--jobs|--out|--archs) [ $# -ge 2 ] || bad_usage "$1 needs a value (see --help)" ;;&
    --python) PYTHON=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --archs) read -r -a ARCHS <<< "$2" || true; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --rebuild) REBUILD=1; shift ;;
    *) bad_usage "unknown option '$1' (see --help)" ;;
  esac
done
[[ -z "$JOBS" || "$JOBS" =~ ^[1-9][0-9]*$ ]] || bad_usage "--jobs must be a positive integer, got '$JOBS'"
JOBS=${JOBS:-$(nproc)}
[ ${#ARCHS[@]} -gt 0 ] || bad_usage "--archs needs at least one arch"
for arch in "${ARCHS[@]}"; do
  [[ "$arch" =~ ^sm_[0-9]+$ ]] || bad_usage "--archs takes names such as sm_61, got '$arch'"
done
REPORT_ARCH=${ARCHS[0]}  # the per-kernel table; the other archs get one summary line each
# Paths given relative to the caller's folder stay so after the cd below (no symlink resolution:
# a venv's python must keep its own path).
[[ "$PYTHON" == */* ]] && PYTHON=$(realpath -s "$PYTHON")
[ "$OUT" = build/compile_sm61 ] || OUT=$(realpath -m -s "$OUT")

cd "$(dirname "$0")/.."
CLANG=${CLANG:-clang++-16}
CACHE=${HYBRIDOPS_SM61_CACHE:-$HOME/.cache/hybridops/cuda-12.9.1-clang}
CUDA_ROOT=$CACHE/cuda
RESULTS=$CACHE/results
# CUDA 12.9 Update 1's component versions. Hashes: the manylinux x86_64 wheels of each.
WHEELS='nvidia-cuda-runtime-cu12==12.9.79 --hash=sha256:25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3
nvidia-cuda-cccl-cu12==12.9.27 --hash=sha256:37869e17ce2e1ecec6eddf1927cca0f8c34e64fd848d40453df559091e2d7117
nvidia-cuda-nvcc-cu12==12.9.86 --hash=sha256:5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0
nvidia-cublas-cu12==12.9.1.4 --hash=sha256:453611eb21a7c1f2c2156ed9f3a45b691deda0440ec550860290dc901af5b4c2
nvidia-cusolver-cu12==11.7.5.82 --hash=sha256:15da72d1340d29b5b3cf3fd100e3cd53421dde36002eda6ed93811af63c40d88
nvidia-cusparse-cu12==12.5.10.65 --hash=sha256:73060ce019ac064a057267c585bf1fd5a353734151f87472ff02b2c5c9984e78
nvidia-curand-cu12==10.3.10.19 --hash=sha256:49b274db4780d421bd2ccd362e1415c13887c53c214f0d4b761752b8f9f6aa1e'

die() { echo "compile_sm61.sh: $*" >&2; exit 1; }
start=$(date +%s)

# ---- the Python with torch ----
has_torch() { "$1" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; }
if [ -z "$PYTHON" ]; then
  for cand in .venv/bin/python python3; do
    if command -v "$cand" >/dev/null && has_torch "$cand"; then PYTHON=$cand; break; fi
  done
  [ -n "$PYTHON" ] || die "no Python with torch found (.venv/bin/python, python3); pass --python"
fi
has_torch "$PYTHON" || die "--python $PYTHON cannot import torch"
TORCH_DIR=$("$PYTHON" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torch").origin))')

# ---- clang ----
if ! command -v "$CLANG" >/dev/null; then
  [ "$INSTALL" = 1 ] || die "$CLANG not found (--no-install given)"
  [ "$CLANG" = clang++-16 ] || die "$CLANG (from \$CLANG) not found"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "compile_sm61: installing clang-16 with apt-get"
  t=$(date +%s)
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-16 >/dev/null \
    || die "could not install clang-16 with apt-get (needs root or passwordless sudo)"
  echo "compile_sm61: clang-16 installed in $(( $(date +%s) - t )) s"
fi

# ---- CUDA 12.9 tree: include/, bin/ptxas, nvvm/libdevice/, lib64/ (the layout --cuda-path expects) ----
mkdir -p "$CACHE"
exec 9> "$CACHE/.lock"
command -v flock >/dev/null && flock 9  # two runs on one machine: the second waits, then finds the tree
if [ "$(cat "$CUDA_ROOT/.wheels" 2>/dev/null)" != "$WHEELS" ]; then
  [ "$INSTALL" = 1 ] || die "no CUDA 12.9 tree in $CUDA_ROOT (--no-install given)"
  echo "compile_sm61: assembling the CUDA 12.9 tree in $CUDA_ROOT (from nothing: downloads ~1.4 GB of wheels)"
  t=$(date +%s)
  tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  printf '%s\n' "$WHEELS" > "$tmp/requirements.txt"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps --only-binary=:all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheels" || die "pip could not download the CUDA 12.9 wheels"
  # Unpack only what clang and ptxas read; every wheel's include/ is merged into one include/.
  "$PYTHON" - "$tmp/wheels" "$tmp/cuda" <<'PY'
import pathlib, shutil, sys, zipfile
wheels, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/")  # nvidia/<component>/<kind>/...
            if info.is_dir() or len(parts) < 4 or parts[0] != "nvidia":
                continue
            rest = parts[2:]
            if rest[0] == "include" or rest == ["bin", "ptxas"] or rest[:2] == ["nvvm", "libdevice"]:
                dest = root.joinpath(*rest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
(root / "bin" / "ptxas").chmod(0o755)
(root / "lib64").mkdir(exist_ok=True)
PY
  [ -x "$tmp/cuda/bin/ptxas" ] && [ -f "$tmp/cuda/nvvm/libdevice/libdevice.10.bc" ] && [ -f "$tmp/cuda/include/cuda.h" ] \
    || die "the wheels lacked ptxas, libdevice or cuda.h"
  printf '%s' "$WHEELS" > "$tmp/cuda/.wheels"
  rm -rf "$CUDA_ROOT" && mv "$tmp/cuda" "$CUDA_ROOT"
  rm -rf "$tmp"; trap - EXIT
  echo "compile_sm61: CUDA 12.9 tree ready in $(( $(date +%s) - t )) s ($(du -sh "$CUDA_ROOT" | cut -f1))"
fi
exec 9>&-
setup_s=$(( $(date +%s) - start ))

# ---- compile ----
shopt -s globstar nullglob
SOURCES=(csrc/**/*.cu)
[ ${#SOURCES[@]} -gt 0 ] || die "no .cu files under csrc/"
mkdir -p "$OUT" && rm -f "$OUT"/*.ptx "$OUT"/*.cubin "$OUT"/*.clang.txt "$OUT"/*.ptxas.txt "$OUT"/*.i
echo "compile_sm61: $("$CLANG" --version | head -1); $("$CUDA_ROOT/bin/ptxas" --version | tail -1)"
echo "compile_sm61: torch headers from $TORCH_DIR; ${#SOURCES[@]} files x ${ARCHS[*]}; $JOBS jobs"

# The defines and language level of setup.py's nvcc command; its --expt-relaxed-constexpr is clang's
# default (constexpr functions are host+device) and its -U__CUDA_NO_HALF*__ flags undo defines clang
# never sets.
export CLANG CUDA_ROOT OUT RESULTS REBUILD
export CLANG_FLAGS="-x cuda --cuda-path=$CUDA_ROOT --cuda-device-only -O3 -std=c++20 \
  -Wno-unknown-cuda-version -Xclang -fcuda-allow-variadic-functions -include .ci/clang_cuda_compat.h \
  -Icsrc -I$TORCH_DIR/include -I$TORCH_DIR/include/torch/csrc/api/include \
  -DHYBRIDOPS_WITH_CUDA -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C"
# Results are reused (like ccache's preprocessor mode) when the preprocessed source, the flags and the
# tool versions match: the key is the sha256 of all of them, with the checkout's and torch's folders
# replaced by placeholders so that a fresh clone elsewhere finds the same key.
export PTXAS_FLAGS="-O3 -v"
export KEY_SALT="$("$CLANG" --version | head -1) | $(cat "$CUDA_ROOT/.wheels") | ptxas $PTXAS_FLAGS | ${CLANG_FLAGS//$TORCH_DIR/@TORCH@}"
export REPO_DIR=$PWD TORCH_DIR
compile_one() {  # FILE ARCH -> $OUT/<path>.<arch>.{ptx,cubin,clang.txt,ptxas.txt}
  set -o pipefail
  local src=$1 arch=$2 t base name key hit
  t=$(date +%s)
  name=${src#csrc/}; name=${name%.cu}
  base=$OUT/${name//\//__}.$arch
  # shellcheck disable=SC2086
  if ! "$CLANG" $CLANG_FLAGS -E -P --cuda-gpu-arch="$arch" "$src" -o "$base.i" 2> "$base.clang.txt"; then
    echo "FAILED clang -E  $src $arch:"; cat "$base.clang.txt"; return 1
  fi
  key=$({ printf '%s\n%s\n' "$KEY_SALT" "$arch"; sed -e "s#$REPO_DIR#@REPO@#g" -e "s#$TORCH_DIR#@TORCH@#g" "$base.i"; } \
        | sha256sum | cut -c1-40)
  rm -f "$base.i"
  hit="$RESULTS/$key"
  if [ "$REBUILD" = 0 ] && [ -f "$hit/ptxas.txt" ]; then
    for ext in ptx cubin clang.txt ptxas.txt; do cp "$hit/$ext" "$base.$ext"; done
    touch "$hit"
    echo "  ok  $src $arch  (cached: results/${key:0:12})"
    return 0
  fi
  # shellcheck disable=SC2086
  if ! "$CLANG" $CLANG_FLAGS -S --cuda-gpu-arch="$arch" "$src" -o "$base.ptx" 2> "$base.clang.txt"; then
    echo "FAILED clang  $src $arch:"; cat "$base.clang.txt"; return 1
  fi
  # shellcheck disable=SC2086
  if ! "$CUDA_ROOT/bin/ptxas" -arch="$arch" $PTXAS_FLAGS "$base.ptx" -o "$base.cubin" > "$base.ptxas.txt" 2>&1; then
    echo "FAILED ptxas  $src $arch:"; cat "$base.ptxas.txt"; return 1
  fi
  mkdir -p "$hit.tmp$$" && for ext in ptx cubin clang.txt ptxas.txt; do cp "$base.$ext" "$hit.tmp$$/$ext"; done
  mv -T "$hit.tmp$$" "$hit" 2>/dev/null || rm -rf "$hit.tmp$$"
  echo "  ok  $src $arch  $(( $(date +%s) - t )) s, $(grep -c ': warning: ' "$base.clang.txt" || true) clang warnings"
}
export -f compile_one
mkdir -p "$RESULTS"
find "$RESULTS" -mindepth 1 -maxdepth 1 -mtime +30 -exec rm -rf {} +  # results unused for a month
t=$(date +%s)
rc=0
for src in "${SOURCES[@]}"; do for arch in "${ARCHS[@]}"; do printf '%s %s\n' "$src" "$arch"; done; done \
  | xargs -P "$JOBS" -n 2 bash -c 'compile_one "$1" "$2"' _ || rc=$?
compile_s=$(( $(date +%s) - t ))

warnings=$(cat "$OUT"/*.clang.txt | grep ': warning: ' | sort | uniq -c || true)
if [ -n "$warnings" ]; then echo "compile_sm61: clang warnings (count over all archs):"; echo "$warnings"; fi
if [ $rc -ne 0 ]; then
  echo "compile_sm61: FAILED (a clang or ptxas error above) after $(( $(date +%s) - start )) s"
  exit 1
fi

# ---- report ----
echo "compile_sm61: ptxas 12.9 -v, $REPORT_ARCH, per kernel:"
"$PYTHON" .ci/ptxas_table.py "$OUT"/*."$REPORT_ARCH".ptxas.txt
for arch in "${ARCHS[@]}"; do
  "$PYTHON" .ci/ptxas_table.py --summary "$OUT"/*."$arch".ptxas.txt
done
echo "compile_sm61: OK in $(( $(date +%s) - start )) s (setup ${setup_s} s, compile ${compile_s} s); outputs in $OUT"
