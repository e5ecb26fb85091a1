#!/usr/bin/env bash
# AddressSanitizer over the CUDA emulation (issue #13, item 4a): builds hybridops._C_emu -- the real
# .cu kernels and launchers compiled for the CPU emulation -- with -fsanitize=address (cached by the
# hash of csrc/, tests/_emu_build.py), then runs a curated set of the emulated CUDA tests with the
# ASan runtime preloaded. Any out-of-bounds access of global memory (CPU tensors) or of a block's
# shared memory (heap-allocated per block with its exact size) stops the run with ASan's report.
# The emulation announces its fiber switches to ASan (__sanitizer_{start,finish}_switch_fiber).
#
#   bash .ci/emu_asan.sh            (needs the package importable: run from the repo with its venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
start=$(date +%s)
lib=$($PY -m tests._emu_build --asan | tail -1)
echo "emu_asan: ASan build $lib ($(( $(date +%s) - start )) s)"
# libstdc++ preloaded beside libasan: triton's module throws C++ exceptions while importing, and
# ASan's __cxa_throw interceptor needs the real one resolved at start-up.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:verify_asan_link_order=0
export HYBRIDOPS_EMU_LIBRARY=$lib
$PY -c "from hybridops import cuda_emulation as e; assert e.available(); import sys; \
print('emu_asan: loaded', sys.modules['hybridops._C_emu'].__file__)"
# Forward, every gradient, fp32/fp64, channels-last, batch 0, stride 2, partial tiles, DCN's NaN and
# border points: the sm61 set without gradcheck (fp32 only for the HybridNetSeg layer shapes), h100's
# larger MixConv tiles, and the emulation-only tests.
$PY -m pytest -q -p no:cacheprovider tests/test_deform_conv2d.py tests/test_deform_conv2d_edge_values.py \
  tests/test_mixed_depthwise_conv2d.py tests/test_mixed_depthwise_conv2d_channels_last.py tests/test_cuda_emulation.py \
  -k "(cuda and emu-sm61 and not hybridnetseg_shapes and not gradcheck) or (hybridnetseg_shapes and emu-sm61 and dtype0) or (test_mixed_depthwise_conv2d.py and cuda_matches_cpu and emu-h100) or test_cuda_emulation"
echo "emu_asan: passed in $(( $(date +%s) - start )) s"
