#!/usr/bin/env bash
# Compile the deform_conv2d CUDA unit (im2col, fused FMA and fused tensor-core kernels) for Hopper
# (sm_90) with the CUDA 13 nvcc, device code only, and print ptxas's per-kernel resources. CI
# builds the extension for sm_80 and compiles for sm_61/70/75 with clang (.ci/compile_sm61.sh); this
# adds the third arch issue #16 names for the fused kernels. Nothing runs on a GPU.
#
# Usage: .ci/compile_sm90.sh [--python PY] [--arch sm_NN] [--out DIR] [-h|--help]
#   --python PY  the Python whose torch headers are compiled against (default: $HYBRIDOPS_TORCH_PYTHON,
#                else .venv/bin/python, else python3)
#   --arch       the target (default sm_90)
#   --out DIR    where the cubin and the ptxas log go (default build/compile_sm90)
# Needs nvcc (CUDA_HOME, else the toolkit behind `nvcc` on PATH) and a CUDA build of torch.
# About 40-60 s on the project's 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${HYBRIDOPS_TORCH_PYTHON:-}
ARCH=sm_90
OUT=build/compile_sm90
bad_usage() { echo "compile_sm90.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --python|--arch|--out) [ $# -ge 2 ] || bad_usage "$1 needs a value (see --help)" ;;&
    --python) PYTHON=$2; shift 2 ;;
    --arch) ARCH=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) bad_usage "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$ARCH" =~ ^sm_[0-9]+a?$ ]] || bad_usage "--arch takes names such as sm_90, got '$ARCH'"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${CUDA_HOME:-}" ]; then
  NVCC_PATH=$(command -v nvcc || true)
  [ -n "$NVCC_PATH" ] || { echo "compile_sm90.sh: no nvcc on PATH and CUDA_HOME unset" >&2; exit 2; }
  # The nvcc on PATH may be a wrapper script (exec /usr/local/cuda-X/bin/nvcc "$@").
  real=$(grep -o '/[^ "]*/bin/nvcc' "$NVCC_PATH" 2>/dev/null | head -1 || true)
  CUDA_HOME=$(dirname "$(dirname "$(realpath "${real:-$NVCC_PATH}")")")
fi
NVCC=$CUDA_HOME/bin/nvcc
[ -x "$NVCC" ] || { echo "compile_sm90.sh: $NVCC not found" >&2; exit 2; }
export CUDA_HOME
# (a command substitution first: under set -e a failing Python stops the script here)
include_list=$("$PYTHON" - <<'PY'
import os, sysconfig
import torch
from torch.utils.cpp_extension import include_paths
site = os.path.dirname(os.path.dirname(torch.__file__))
paths = include_paths() + [sysconfig.get_paths()["include"]]
paths += [p for p in (os.path.join(site, "nvidia", "cu13", "include"),) if os.path.isdir(p)]
print("\n".join(paths))
PY
)
mapfile -t INCLUDES <<< "$include_list"
mkdir -p "$OUT"
args=(-std=c++20 -O3 --expt-relaxed-constexpr -cubin -arch="$ARCH" -Xptxas -v
      -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__
      -U__CUDA_NO_HALF2_OPERATORS__ -DHYBRIDOPS_WITH_CUDA -DTORCH_API_INCLUDE_EXTENSION_H
      -DTORCH_EXTENSION_NAME=_C '-DHYBRIDOPS_VERSION="ci"' '-DHYBRIDOPS_TORCH_VERSION="ci"'
      "-DHYBRIDOPS_CUDA_ARCHS=\"$ARCH\"" -Icsrc)
for inc in "${INCLUDES[@]}"; do args+=(-I"$inc"); done
log=$OUT/deform_conv2d_cuda.$ARCH.ptxas.txt
echo "compile_sm90: nvcc $("$NVCC" --version | tail -2 | head -1) -> $ARCH"
if ! "$NVCC" "${args[@]}" csrc/deform_conv2d/deform_conv2d_cuda.cu -o "$OUT/deform_conv2d_cuda.$ARCH.cubin" > "$log" 2>&1; then
  grep -v "^ptxas info" "$log" | head -40 >&2
  echo "compile_sm90: FAILED ($ARCH)" >&2
  exit 1
fi
"$PYTHON" .ci/ptxas_table.py "$log" | grep -E "^\| (kernel|---)|fused" || true
"$PYTHON" .ci/ptxas_table.py --summary "$log"
