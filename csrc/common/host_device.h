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

namespace hybridops {

template <typename T>
HOST_DEVICE_INLINE T floor_hd(T v) {
#if defined(__CUDA_ARCH__)
  return floor(v);
#else
  return std::floor(v);
#endif
}

}  // namespace hybridops
