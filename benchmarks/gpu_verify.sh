#!/usr/bin/env bash
# GPU verification in ONE device call: build for this GPU's arch, the whole test suite (CUDA tests
# included), compute-sanitizer (memcheck) on the CUDA tests, and every op/model benchmark.
#
#   bash benchmarks/gpu_verify.sh [phases]      phases: comma list of build,test,sanitize,bench (default: all);
#                                               bench = bench-ops (deform_conv2d, mixconv, losses) + bench-latency;
#                                               after deform_conv2d, benchmarks/dcn_roofline.py sets its
#                                               predictions beside the measurement (in the log)
#
# Everything lands under $OUT (default ./gpu_verify_out): gpu_verify.log (all output, tests
# included), nvidia-smi.txt, and one JSON per benchmark (<name>-cuda.json) -- at most 8 files, as
# the device tool returns. Copy the JSON files into benchmarks/results/ and commit them.
# Uses the machine's own python3/torch (no network there); nothing is installed but hybridops.
# One device command may run 10 minutes at most: run it as two or three calls if needed, e.g.
#   bash benchmarks/gpu_verify.sh build,test,sanitize   then   bash benchmarks/gpu_verify.sh build,bench-ops
#   then   bash benchmarks/gpu_verify.sh build,bench-latency
# (a fresh machine needs the build phase in each call; the ninja build takes ~1-2 min on 16 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_verify_out}
mkdir -p "$OUT"
PHASES=${1:-build,test,sanitize,bench}
PY=${PYTHON:-python3}
exec > >(tee "$OUT/gpu_verify.log") 2>&1
export PYTHONUNBUFFERED=1
has() { [[ ",$PHASES," == *",$1,"* ]]; }
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
status=0

step "environment"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
head -15 "$OUT/nvidia-smi.txt"
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
ARCH=$($PY -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')") \
  || { echo "gpu_verify: no CUDA device visible to $PY's torch"; exit 1; }
which nvcc && nvcc --version | tail -2

if has build; then
  step "build for sm_${ARCH/./}"
  export TORCH_CUDA_ARCH_LIST="$ARCH" HYBRIDOPS_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
  timeout 480 $PY -m pip install --no-build-isolation --no-deps --no-index -v -e . 2>&1 | grep -E "hybridops build|error|Successfully|warning: " || true
  $PY -c "import hybridops; print(hybridops.build_info())" || { echo "BUILD FAILED"; exit 1; }
fi

if has test; then
  step "tests (all, CUDA included)"
  timeout 420 $PY -m pytest tests -q -rs --durations=10 -p no:cacheprovider || status=1
fi

if has sanitize; then
  step "compute-sanitizer memcheck on the CUDA tests"
  if command -v compute-sanitizer >/dev/null; then
    timeout 420 compute-sanitizer --tool memcheck --error-exitcode 97 --print-limit 20 \
      $PY -m pytest tests -q -k "cuda" -m "not slow" -p no:cacheprovider -x || { echo "SANITIZER: exit $?"; status=1; }
  else
    echo "compute-sanitizer not found"
  fi
fi

BENCHES=""
if has bench || has bench-ops; then BENCHES="deform_conv2d mixconv losses"; fi
if has bench || has bench-latency; then BENCHES="$BENCHES latency"; fi
for b in $BENCHES; do
  step "benchmark $b"
  timeout 420 $PY -m "benchmarks.$b" --device cuda --json "$OUT/$b-cuda.json" || status=1
done
if [[ -f "$OUT/deform_conv2d-cuda.json" ]]; then
  # Prediction beside measurement (into the log only: no extra file under $OUT).
  step "DCN roofline model (predicted) beside the deform_conv2d measurement"
  timeout 120 $PY -m benchmarks.dcn_roofline --measured "$OUT/deform_conv2d-cuda.json" || status=1
fi
step "done, status $status"
exit $status
