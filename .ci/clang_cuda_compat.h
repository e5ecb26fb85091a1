// Force-included by .ci/compile_sm61.sh after clang's CUDA runtime wrapper (never by setup.py/nvcc).
//
// CUDA 12's crt/host_defines.h defines `__noinline__` as `__attribute__((noinline))`; libstdc++ 12+
// writes `__attribute__((__noinline__))` (<memory>, <string>), which then expands to a nested
// attribute and fails to parse. clang >= 15 knows `__noinline__` as a CUDA keyword, so the macro is
// not needed there (llvm/llvm-project#57544, NVIDIA/thrust#1703).
#if defined(__clang__) && defined(__CUDA__) && __clang_major__ >= 15
#undef __noinline__
#endif
