// Macros that let one function body compile for both the CPU (g++) and the GPU (nvcc).
#pragma once

#include <cmath>

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

namespace hybridops {

template <typename T>
HOST_DEVICE_INLINE T floor_hd(T v) {
#if defined(__CUDA_ARCH__)
  return floor(v);
#else
  return std::floor(v);
#endif
}

// Round to nearest, ties to even (the current rounding mode), on both sides.
template <typename T>
HOST_DEVICE_INLINE T rint_hd(T v) {
#if defined(__CUDA_ARCH__)
  return rint(v);
#else
  return std::rint(v);
#endif
}

}  // namespace hybridops
