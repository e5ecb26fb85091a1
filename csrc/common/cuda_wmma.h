// Tensor cores through nvcuda::wmma, for kernels with an FMA fallback (issue #16: the fused DCN
// forward on sm_80+). Include it at file scope, after common/cuda_launch.h.
//
//   HYBRIDOPS_WMMA           1 where a kernel body may use nvcuda::wmma: the device passes for
//                            sm_80 and newer, and the CPU emulation (csrc/emulation/wmma_emulation.h);
//                            0 elsewhere (sm_61/70/75 device passes, the host pass), where a
//                            tensor-core kernel's body is a trap and its launcher must not run it:
//                            tensor_cores_available() below checks the device, and the launcher
//                            also checks which code the driver loaded for the kernel (a build with
//                            only compute_75 PTX JIT-compiles the trap even on an sm_80 GPU).
//   WmmaElement<scalar_t>    the wmma operand type of at::Half / at::BFloat16 (__half /
//                            __nv_bfloat16 on the GPU, the c10 types in the emulation): shared-memory
//                            tiles are written as scalar_t and read through a cast to it.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if !defined(HYBRIDOPS_CUDA_EMULATION)
#include <ATen/cuda/CUDAContext.h>
#endif

#if defined(HYBRIDOPS_CUDA_EMULATION)
#include "emulation/wmma_emulation.h"
#define HYBRIDOPS_WMMA 1
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#define HYBRIDOPS_WMMA 1
#else
#define HYBRIDOPS_WMMA 0
#endif

namespace hybridops {

template <typename scalar_t>
struct WmmaElement;
#if defined(HYBRIDOPS_CUDA_EMULATION)
template <>
struct WmmaElement<c10::Half> {
  using type = c10::Half;
};
template <>
struct WmmaElement<c10::BFloat16> {
  using type = c10::BFloat16;
};
#elif HYBRIDOPS_WMMA
template <>
struct WmmaElement<c10::Half> {
  using type = __half;
};
template <>
struct WmmaElement<c10::BFloat16> {
  using type = __nv_bfloat16;
};
#endif

// Whether the current device runs the sm_80 tensor-core kernels (compute capability 8.0 or newer;
// the emulation's h100 profile says 9.0, its sm61 profile 6.1).
inline bool tensor_cores_available() { return at::cuda::getCurrentDeviceProperties()->major >= 8; }

}  // namespace hybridops
