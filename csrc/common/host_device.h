// Macros that let one function body compile for both the CPU (g++) and the GPU (nvcc).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HOST_DEVICE __host__ __device__
#define HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE
#define HOST_DEVICE_INLINE inline
#endif

// Loop unrolling hint understood by both nvcc and g++.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define HYBRIDOPS_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define HYBRIDOPS_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define HYBRIDOPS_UNROLL _Pragma("GCC unroll 4")
#else
#define HYBRIDOPS_UNROLL
#endif

// Math functions: CUDA's global overloads on the device, std:: on the host.
#if defined(__CUDA_ARCH__)
#define HYBRIDOPS_MATH(fn) ::fn
#else
#define HYBRIDOPS_MATH(fn) std::fn
#endif

namespace hybridops {

template <typename T>
HOST_DEVICE_INLINE T floor_hd(T v) { return HYBRIDOPS_MATH(floor)(v); }

// Round to nearest, ties to even (the current rounding mode).
template <typename T>
HOST_DEVICE_INLINE T rint_hd(T v) { return HYBRIDOPS_MATH(rint)(v); }

// ceil(a / b) and a rounded up to a multiple of m, for positive b and m (tile counts, padded rows).
HOST_DEVICE_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
HOST_DEVICE_INLINE int64_t round_up(int64_t a, int64_t m) { return ceil_div(a, m) * m; }

}  // namespace hybridops
