#!/usr/bin/env bash
# The GPU check in ONE device call of at most 9 minutes (issue #13 item 6).
#
# Usage (from anywhere; it works in the repository root):
#   bash benchmarks/gpu_verify.sh               on the GPU machine: the whole check, results in $OUT
#   bash benchmarks/gpu_verify.sh --dry-run     the same phases on the CPU: the CUDA emulation in place
#                                               of the GPU, tiny benchmark budgets (CI runs this; ~4 min)
#   bash benchmarks/gpu_verify.sh --plan [--dry-run]   print the phases, budgets and commands; run nothing
#   bash benchmarks/gpu_verify.sh --phases tests,bench  only these phases (env always runs; a fresh GPU
#                                               machine needs build before tests, sanitize and bench)
#   bash benchmarks/gpu_verify.sh --help
# From the device tool: command `bash benchmarks/gpu_verify.sh`, timeout_s 600 (the script stops itself
# at its deadline, 530 s, well inside). Environment: OUT (results folder, default ./gpu_verify_out in
# the repository root), PYTHON (default python3), MAX_JOBS (default 16), GPU_VERIFY_DEADLINE (seconds,
# default 530; dry run 230).
#
# Phases, in priority order; each writes its results as it goes, so a run cut short (a phase's
# timeout, the deadline, the device tool's own limit) keeps what the earlier phases wrote:
#   env       nvidia-smi, python/torch/CUDA/nvcc/compute-sanitizer versions, the device's arch.
#             Dry run: versions, no nvidia-smi.
#   build     pip install --no-build-isolation --no-deps --no-index -v -e . with HYBRIDOPS_BUILD_CUDA=1,
#             TORCH_CUDA_ARCH_LIST = the device's arch, MAX_JOBS=16; then build_info() must say
#             built_with_cuda for that arch. Dry run: prints that command, builds nothing, and requires
#             the installed build's build_info()["cuda_emulation"].
#   tests     the CUDA tests only: pytest -k "cuda and not emu" (every test taking the cuda_backend
#             fixture, on its `cuda` id, plus the GPU-only ones), then the Triton loss kernels
#             (tests/test_losses.py -k TestKernels). Dry run: a curated subset of the same tests on the
#             emulation (their emu-sm61 and emu-h100 ids, without the slow model/gradcheck/large-shape
#             ones), then the Triton selection (skipped on the CPU: it proves the selection collects).
#   sanitize  compute-sanitizer memcheck (PYTORCH_NO_CUDA_MEMORY_CACHING=1, so every tensor is its own
#             allocation) on a curated set of DCN and MixConv tests (small shapes, forward and every
#             gradient), then racecheck on its MixConv and fused-DCN tests (the kernels with shared memory, barriers
#             and warp shuffles). Dry run: STAND-IN, no compute-sanitizer: the same set on the
#             emulation (both profiles) with HYBRIDOPS_EMU_ORDER=reverse (threads and blocks in
#             reverse order, which a missing barrier or a race between blocks turns into wrong values).
#   bench     the op benchmarks against their peers (benchmarks/deform_conv2d.py, mixconv.py,
#             losses.py) and the latency table (benchmarks/latency.py), each with --time-limit from
#             its share of the time left (weights 2:2:2:3), stopping early and writing what it measured
#             (the JSON's time_limit record says what was skipped). Dry run: --device cpu, small cases,
#             --time-limit 2 (the first measurement of each always runs).
#
# Budgets: each phase may use at most its cap and never runs past the deadline; `bench` gets all the
# time left (at least its cap when the phases before it keep to theirs). The caps (GPU, dry run) are
# printed by --plan and sum to the deadline: env 20/20, build 240/5, tests 120/100, sanitize 80/35,
# bench 70/70 s -> 530/230 s. A machine start takes a minute or more of the session's 15 device
# minutes, so one 9-minute call leaves room for a rerun of a phase. The GPU numbers are estimates made
# without a GPU: the log gives every step's wall time, so correct the caps after the first real run.
#
# Files, all in $OUT, at most 8 (the device tool returns no more):
#   gpu_verify.log     everything printed: phases, commands, budgets, test and benchmark summaries,
#                      the final table of steps (status, seconds)
#   environment.txt    nvidia-smi, versions, build_info() and the build's full output
#   tests.txt          pytest -v output of the tests phase (test ids with PASSED/FAILED/SKIPPED)
#   sanitizer.txt      compute-sanitizer's output (dry run: the stand-in's pytest output)
#   deform_conv2d.json mixconv.json losses.json latency.json   the benchmarks' results
# Exit status: 0 all phases complete and passing; 1 a phase failed (build, a test, a sanitizer error,
# a benchmark error); 2 nothing failed but something was cut short (a timeout, no time left, a
# benchmark interrupted). The last lines printed are the step table (the device tool returns the tail).
#
# Keeping the results: copy the benchmark JSON files into benchmarks/results/ named
# <benchmark>-cuda-<GPU name>-<UTC date>.json, e.g. from the device tool's files_at folder:
#   gpu=$(python3 -c "import json; print(json.load(open('F/latency.json'))['environment']['device_name'].replace(' ', '_'))")
#   for b in deform_conv2d mixconv losses latency; do cp F/$b.json benchmarks/results/$b-cuda-$gpu-$(date -u +%Y%m%d).json; done
# Each file already records the GPU name, torch and CUDA versions, hybridops' build_info, the git sha
# and the date (its "environment"); environment.txt adds the driver and nvidia-smi. Quote them in
# README with `python -m benchmarks.report benchmarks/results/<file>.json`, and say which results were
# partial (time_limit.complete false). Commit gpu_verify.log's step table with them if it matters.
set -uo pipefail

usage() { sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }

DRY=0; PLAN=0; PHASES=build,tests,sanitize,bench
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --plan|--list) PLAN=1 ;;
    --phases) [ $# -ge 2 ] || { echo "gpu_verify: --phases needs a value" >&2; exit 64; }; PHASES=$2; shift ;;
    --phases=*) PHASES=${1#--phases=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_verify: unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
  shift
done
for p in ${PHASES//,/ }; do
  case "$p" in build|tests|sanitize|bench) ;; *) echo "gpu_verify: --phases: unknown phase '$p' (build, tests, sanitize, bench)" >&2; exit 64 ;; esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/gpu_verify_out}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}
FILES=(gpu_verify.log environment.txt tests.txt sanitizer.txt deform_conv2d.json mixconv.json losses.json latency.json)
BENCHES=(deform_conv2d mixconv losses latency)
BENCH_WEIGHTS=(2 2 2 3)

# ---------------------------------------------------------------------------------------- the plan
PHASE_NAMES=(env build tests sanitize bench)
if [ $DRY = 1 ]; then
  MODE="dry run (CPU, CUDA emulation)"; DEADLINE=${GPU_VERIFY_DEADLINE:-230}; CAPS=(20 5 100 35 70)
  BACKENDS=(emu-sm61 emu-h100)
  TEST_K="(emu-sm61 or emu-h100) and not test_models and not gradcheck and not (hybridnetseg_shapes and (shape0 or shape1 or shape2))"
else
  MODE="GPU"; DEADLINE=${GPU_VERIFY_DEADLINE:-530}; CAPS=(20 240 120 80 70)
  BACKENDS=(cuda)
  TEST_K="cuda and not emu"
fi
[[ $DEADLINE =~ ^[0-9]+$ ]] || { echo "gpu_verify: GPU_VERIFY_DEADLINE must be whole seconds, got '$DEADLINE'" >&2; exit 64; }
TRITON_K="TestKernels"
# The sanitizer's curated set: small shapes, forward and every gradient; @ is the backend's id
# (float32: DCN's dtype1, MixConv's dtype0; tests/test_gpu_verify_script.py checks every id exists).
SAN_DCN=(
  "tests/test_deform_conv2d.py::test_cuda_matches_cpu[@-im2col-basic-dtype1]"
  "tests/test_deform_conv2d.py::test_cuda_matches_cpu[@-im2col-groups_and_offset_groups-dtype1]"
  "tests/test_deform_conv2d.py::test_cuda_matches_cpu[@-im2col-tiny_input_large_offsets-dtype1]"
  "tests/test_deform_conv2d.py::test_cuda_low_precision[@-im2col-dtype0-0.01]"
)
# The fused DCN kernels use shared memory and barriers too: memcheck and racecheck.
SAN_DCN_FUSED=(
  "tests/test_deform_conv2d.py::test_cuda_matches_cpu[@-fused-basic-dtype1]"
  "tests/test_deform_conv2d.py::test_cuda_matches_cpu[@-fused-groups_and_offset_groups-dtype1]"
  "tests/test_deform_conv2d.py::test_cuda_low_precision[@-fused-dtype0-0.01]"
  "tests/test_deform_conv2d_channels_last.py::test_cuda_channels_last_matches_nchw[@-fused-dtype0]"
  "tests/test_deform_conv2d_channels_last.py::test_cuda_channels_last_matches_nchw[@-fused-dtype1]"
)
SAN_MDC=(
  "tests/test_mixed_depthwise_conv2d.py::test_cuda_matches_cpu[@-dtype0-unequal-split]"
  "tests/test_mixed_depthwise_conv2d.py::test_cuda_matches_cpu[@-dtype0-smaller-than-kernel]"
  "tests/test_mixed_depthwise_conv2d.py::test_cuda_matches_cpu[@-dtype0-hybridnetseg-k3579-s2]"
  "tests/test_mixed_depthwise_conv2d.py::test_cuda_hybridnetseg_shapes[@-dtype2-shape3]"
  "tests/test_mixed_depthwise_conv2d_channels_last.py::test_cuda_channels_last_matches_reference[@-stride2-odd-dtype0]"
  "tests/test_mixed_depthwise_conv2d_channels_last.py::test_cuda_channels_last_matches_reference[@-wide-s1-dtype0]"
)
ids() {  # ids BACKEND... -- IDS...: every id with @ replaced by each backend
  local b=() i
  while [ "$1" != -- ]; do b+=("$1"); shift; done; shift
  for i in "$@"; do for x in "${b[@]}"; do echo "${i/@/$x}"; done; done
}
mapfile -t SAN_ALL < <(ids "${BACKENDS[@]}" -- "${SAN_DCN[@]}" "${SAN_DCN_FUSED[@]}" "${SAN_MDC[@]}")
mapfile -t SAN_RACE < <(ids "${BACKENDS[@]}" -- "${SAN_DCN_FUSED[@]}" "${SAN_MDC[@]}")
PYTEST=("$PY" -m pytest -p no:cacheprovider -rfEs)
BUILD_CMD=("$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e .)

bench_args() {  # bench_args NAME: the benchmark's arguments besides --json and --time-limit
  if [ $DRY = 1 ]; then
    case "$1" in
      deform_conv2d) echo "--device cpu --quick" ;;
      mixconv) echo "--device cpu --quick --batches 1 --budget 0.05" ;;
      losses) echo "--device cpu --quick --reps 2" ;;
      latency) echo "--device cpu --quick --no-onnx --models hybridnetseg hybridnetseg_peer" ;;
    esac
  else
    case "$1" in
      mixconv) echo "--device cuda --budget 0.25" ;;
      deform_conv2d) echo "--device cuda --layouts nchw channels_last" ;;  # NCHW rows first
      *) echo "--device cuda" ;;
    esac
  fi
}

print_plan() {
  local total=0 i
  echo "gpu_verify plan: $MODE; deadline $DEADLINE s; OUT=$OUT; phases env,$PHASES"
  for i in "${!PHASE_NAMES[@]}"; do
    total=$((total + CAPS[i]))
    printf '  %-9s cap %4d s%s\n' "${PHASE_NAMES[i]}" "${CAPS[i]}" \
      "$([ "${PHASE_NAMES[i]}" = bench ] && echo ' (or all the time left, if more)')"
  done
  echo "  caps sum to $total s (deadline $DEADLINE s)"
  if [ $DRY = 1 ]; then
    echo "  build: prints, does not run: TORCH_CUDA_ARCH_LIST=<device arch> HYBRIDOPS_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} ${BUILD_CMD[*]}"
  else
    echo "  build: TORCH_CUDA_ARCH_LIST=<device arch> HYBRIDOPS_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} ${BUILD_CMD[*]}"
  fi
  echo "  tests: ${PYTEST[*]} -v tests -k \"$TEST_K\""
  echo "         ${PYTEST[*]} -v tests/test_losses.py -k \"$TRITON_K\""
  if [ $DRY = 1 ]; then
    echo "  sanitize (STAND-IN: HYBRIDOPS_EMU_ORDER=reverse on the emulation, no compute-sanitizer): ${#SAN_ALL[@]} tests"
  else
    echo "  sanitize: compute-sanitizer --tool memcheck on ${#SAN_ALL[@]} tests, --tool racecheck on ${#SAN_RACE[@]} (MixConv, fused DCN)"
  fi
  printf '            %s\n' "${SAN_ALL[@]}"
  for i in "${!BENCHES[@]}"; do
    echo "  bench: $PY -m benchmarks.${BENCHES[i]} $(bench_args "${BENCHES[i]}") --time-limit $([ $DRY = 1 ] && echo 2 || echo '<0.7 x share>') --json \$OUT/${BENCHES[i]}.json (weight ${BENCH_WEIGHTS[i]} of the time left: timeout = share)"
  done
  echo "  files: ${FILES[*]}"
}

if [ $PLAN = 1 ]; then print_plan; exit 0; fi

# ------------------------------------------------------------------------------------- the run
mkdir -p "$OUT" || exit 1
for f in "${FILES[@]}"; do rm -f "$OUT/$f"; done
exec > >(tee -a "$OUT/gpu_verify.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1
SECONDS=0
STEPS=()     # "name|status|seconds|detail"
FAILED=0; CUT=0
has() { [[ ",$PHASES," == *",$1,"* ]]; }
say() { echo "[gpu_verify $(printf '%3d' $SECONDS) s] $*"; }
PHASE_END=0
phase() {  # phase NAME: starts a phase; its end is min(now + cap, deadline), bench: the deadline
  local i
  for i in "${!PHASE_NAMES[@]}"; do [ "${PHASE_NAMES[i]}" = "$1" ] && break; done
  PHASE_END=$((SECONDS + CAPS[i]))
  if [ "$1" = bench ] || [ $PHASE_END -gt $DEADLINE ]; then PHASE_END=$DEADLINE; fi
  echo; say "=== phase $1: $((PHASE_END - SECONDS)) s (cap ${CAPS[i]} s, deadline in $((DEADLINE - SECONDS)) s)"
}
left() { echo $((PHASE_END - SECONDS)); }
record() {  # record NAME STATUS SECONDS [DETAIL]
  STEPS+=("$1|$2|$3|${4:-}")
  case "$2" in ok) ;; FAILED) FAILED=1 ;; *) CUT=1 ;; esac
  say "$1: $2 after $3 s${4:+ ($4)}"
}
# step NAME SECONDS FILE CMD...: CMD under `timeout SECONDS`, its output appended to FILE (and, with
# FILE '-', printed); records ok / FAILED / TIMEOUT / SKIPPED. Returns the command's status.
step() {
  local name=$1 secs=$2 file=$3 t0=$SECONDS rc cmd
  shift 3
  if [ "$secs" -lt 5 ]; then record "$name" SKIPPED 0 "no time left"; return 124; fi
  cmd="$*"; cmd=${cmd//$'\n'/ }; [ ${#cmd} -le 300 ] || cmd="${cmd:0:300}..."
  say "$name (timeout $secs s): $cmd"
  if [ "$file" = - ]; then
    timeout -k 10 "$secs" "$@"; rc=$?
  else
    echo "### $name: $cmd" >> "$file"
    timeout -k 10 "$secs" "$@" >> "$file" 2>&1; rc=$?
  fi
  if [ $rc = 0 ]; then record "$name" ok $((SECONDS - t0))
  elif [ $rc = 124 ] || [ $rc = 137 ]; then record "$name" TIMEOUT $((SECONDS - t0)) "cut at $secs s"
  else record "$name" FAILED $((SECONDS - t0)) "exit $rc"; fi
  return $rc
}
pytest_summary() {  # the last result line of a pytest run in FILE
  grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|deselected|error)|no tests ran' "$1" | tail -1
}
finish() {
  local s n st secs detail
  echo; say "=== steps ($MODE; $OUT)"
  printf '%-34s %-8s %6s  %s\n' step status seconds detail
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n st secs detail <<< "$s"
    printf '%-34s %-8s %6s  %s\n' "$n" "$st" "$secs" "$detail"
  done
  n=$(find "$OUT" -maxdepth 3 -type f | wc -l)
  if [ "$n" -gt 8 ]; then echo "gpu_verify: $OUT holds $n files, more than the 8 the device tool returns"; FAILED=1; fi
  local rc=0
  [ $CUT = 1 ] && rc=2
  [ $FAILED = 1 ] && rc=1
  say "done in $SECONDS s (deadline $DEADLINE s): exit $rc ($([ $rc = 0 ] && echo 'all complete' || { [ $rc = 1 ] && echo 'a step FAILED' || echo 'a step was cut short'; }))"
  exec >&- 2>&-
  wait "$TEE_PID" 2> /dev/null  # the log is complete when the script returns
  exit $rc
}

print_plan
# ------------------------------------------------------------------------------------------ env
phase env
ENV_FILE=$OUT/environment.txt
{
  echo "# gpu_verify $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)')"
  if [ $DRY = 1 ]; then echo "# dry run: nvidia-smi not called"
  else echo "## nvidia-smi"; timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "## nvcc"; timeout 20 nvcc --version 2>&1 | tail -2
    echo "## compute-sanitizer"; timeout 20 compute-sanitizer --version 2>&1 | head -2
  fi
} >> "$ENV_FILE"
[ $DRY = 1 ] || timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1
step env-python $(left) "$ENV_FILE" "$PY" -c "
import sys, platform, torch
print('python', sys.version.split()[0], platform.machine(), '| torch', torch.__version__, '| torch CUDA', torch.version.cuda,
      '| GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
tail -1 "$ENV_FILE"
ARCH=
if [ $DRY = 0 ]; then
  ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>>"$ENV_FILE")
  if [ -z "$ARCH" ]; then record env-device FAILED $SECONDS "no CUDA device visible to $PY's torch"; finish; fi
  say "device arch: $ARCH"
fi

# ---------------------------------------------------------------------------------------- build
# The installed build: the CUDA kernels for the device's arch (GPU), the emulation (dry run).
CHECK_BUILD='
import sys, hybridops
dry, arch = sys.argv[1] == "1", sys.argv[2].replace(".", "")
info = hybridops.build_info()
print("build_info", info)
if dry:
    sys.exit(0 if info.get("cuda_emulation") else
             "build_info()[\"cuda_emulation\"] is False: reinstall with HYBRIDOPS_BUILD_CUDA_EMU=1")
if not (info["built_with_cuda"] and any(str(a).replace(".", "").startswith(arch) for a in info["cuda_archs"])):
    sys.exit(f"the build has no CUDA kernels for sm_{arch}: {info}")
'
if has build; then
  phase build
  if [ $DRY = 1 ]; then
    say "dry run: the GPU run builds with: TORCH_CUDA_ARCH_LIST=<device arch> HYBRIDOPS_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} ${BUILD_CMD[*]}"
  else
    export TORCH_CUDA_ARCH_LIST=$ARCH HYBRIDOPS_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
    say "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST HYBRIDOPS_BUILD_CUDA=1 MAX_JOBS=$MAX_JOBS"
    step build $(left) "$ENV_FILE" "${BUILD_CMD[@]}"; rc=$?
    grep -E '^\[hybridops build\]|error:|Error|Successfully installed' "$ENV_FILE" | tail -20
    [ $rc = 0 ] || { tail -40 "$ENV_FILE"; finish; }
  fi
fi
step build-check 60 "$ENV_FILE" "$PY" -c "$CHECK_BUILD" "$DRY" "$ARCH" || { tail -3 "$ENV_FILE"; finish; }
tail -1 "$ENV_FILE"

# ---------------------------------------------------------------------------------------- tests
TESTS=$OUT/tests.txt
if has tests; then
  phase tests
  step tests-cuda $(( $(left) - 20 )) "$TESTS" "${PYTEST[@]}" -v --durations=10 tests -k "$TEST_K"
  pytest_summary "$TESTS"
  step tests-triton $(left) "$TESTS" "${PYTEST[@]}" -v tests/test_losses.py -k "$TRITON_K"
  pytest_summary "$TESTS"
fi

# ------------------------------------------------------------------------------------- sanitize
SAN=$OUT/sanitizer.txt
if has sanitize; then
  phase sanitize
  if [ $DRY = 1 ]; then
    say "STAND-IN for compute-sanitizer (dry run): the curated set on the emulation, threads and blocks in reverse order"
    HYBRIDOPS_EMU_ORDER=reverse step sanitize-emu-reverse $(left) "$SAN" "${PYTEST[@]}" -v "${SAN_ALL[@]}"
    pytest_summary "$SAN"
  elif ! command -v compute-sanitizer > /dev/null; then
    record sanitize FAILED 0 "compute-sanitizer not found"
  else
    half=$(( $(left) / 2 ))
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 step sanitize-memcheck $half "$SAN" compute-sanitizer --tool memcheck \
      --error-exitcode 97 --print-limit 50 "${PYTEST[@]}" -q "${SAN_ALL[@]}"
    grep -E '^========= (ERROR SUMMARY|Invalid|Program hit)' "$SAN" | tail -3; pytest_summary "$SAN"
    step sanitize-racecheck $(left) "$SAN" compute-sanitizer --tool racecheck --error-exitcode 97 --print-limit 50 \
      "${PYTEST[@]}" -q "${SAN_RACE[@]}"
    grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY|Race|Error)' "$SAN" | tail -3; pytest_summary "$SAN"
  fi
fi

# ---------------------------------------------------------------------------------------- bench
bench_status() {  # the JSON's time_limit record, as "complete" or "partial: ..."
  "$PY" -c "
import json, sys
t = json.load(open(sys.argv[1])).get('time_limit') or {}
print('complete' if t.get('complete') else 'partial: %s measured, %s skipped%s' % (
    t.get('measured'), t.get('skipped'), ', interrupted' if t.get('interrupted') else ''))" "$1" 2>/dev/null || echo "no results file"
}
if has bench; then
  phase bench
  weights_left=0; for w in "${BENCH_WEIGHTS[@]}"; do weights_left=$((weights_left + w)); done
  for i in "${!BENCHES[@]}"; do
    b=${BENCHES[i]}; w=${BENCH_WEIGHTS[i]}
    share=$(( $(left) * w / weights_left )); weights_left=$((weights_left - w))
    if [ $DRY = 1 ]; then limit=2; else limit=$(( share * 7 / 10 )); fi
    json=$OUT/$b.json
    # shellcheck disable=SC2046  # bench_args is a word list
    step "bench-$b" "$share" - "$PY" -m "benchmarks.$b" $(bench_args "$b") --time-limit "$limit" --json "$json"
    st=$(bench_status "$json"); say "bench-$b: $st"
    case "$st" in complete|"partial: "*[0-9]" skipped") ;; *) record "bench-$b-results" CUT 0 "$st" ;; esac
    if [ "$b" = deform_conv2d ] && [ -f "$json" ]; then  # the traffic model's prediction beside it (log only)
      say "DCN roofline model (predicted) beside the measurement:"
      timeout 60 "$PY" -m benchmarks.dcn_roofline --measured "$json" || say "dcn_roofline failed (exit $?)"
    fi
  done
fi
finish
