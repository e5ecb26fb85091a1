// HYBRIDOPS_MDC_EMULATE_CUDA=1 (tests only) runs the CUDA kernels' algorithm on the CPU: the same
// launch plans (mixed_depthwise_conv2d_plan.h), the same block decomposition, the same per-thread
// bodies from the kernel header, one simulated thread at a time, and the same grad_weight reduction
// order (warp shuffle tree, per-chunk partials, fixed-order sum). Slow; it exists so that the GPU
// code's tiling is exercised by the CPU test-suite. The emulated GPU is set by
//   HYBRIDOPS_MDC_EMULATE_SMEM    shared memory per block in bytes (default 49152: Pascal, sm_61)
//   HYBRIDOPS_MDC_EMULATE_SMS     SM count (default 1; sizes the grad_weight grid, never its result)
//   HYBRIDOPS_MDC_EMULATE_CHUNKS  grad_weight chunks per channel instead of the plan's (tests only:
//                                 several items per chunk on small problems)
// Tensors are NCHW-contiguous; scalar_t is double, float, c10::Half or c10::BFloat16.
#pragma once

#include <cstdint>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_kernel.h"

namespace hybridops {
namespace mdc {

// Whether HYBRIDOPS_MDC_EMULATE_CUDA=1.
bool emulate_cuda();

// out [N, C, Ho, Wo] = conv(in [N, C, H, W]) + bias (bias may be null); flip: the flipped kernel
// (grad_input at stride 1, with in = grad_output).
template <typename scalar_t>
void emu_forward(const Geometry& g, const GroupPointers<const scalar_t>& wp, const scalar_t* in, const scalar_t* bias,
                 scalar_t* out, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool flip);

// grad_in [N, C, H, W] from grad_out [N, C, Ho, Wo] at stride > 1 (the gather kernel).
template <typename scalar_t>
void emu_grad_input_gather(const Geometry& g, const GroupPointers<const scalar_t>& wp, const scalar_t* grad_out,
                           scalar_t* grad_in);

// Each group's grad_w [C_g, 1, k, k] from in [N, C, H, W] and grad_out [N, C, Ho, Wo].
template <typename scalar_t>
void emu_grad_weight(const Geometry& g, const scalar_t* in, const scalar_t* grad_out,
                     const GroupPointers<scalar_t>& grad_w);

}  // namespace mdc
}  // namespace hybridops
