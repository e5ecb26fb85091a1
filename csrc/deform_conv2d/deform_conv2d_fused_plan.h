// The launch plan of the fused CUDA forward of deform_conv2d (deform_conv2d_fused_cuda.cuh), a pure
// host function shared by the launcher and the tests, and the rule that picks the algorithm.
//
// A block computes a tile of tile_p output pixels of one image times tile_co output channels of one
// weight group. Each of its kFusedThreads threads keeps the bilinear corners of up to kFusedPairs
// (tap, pixel) pairs in registers (computed once per offset group), samples chunk_c input channels
// at a time into shared memory ([chunk_c * K][tile_p], in the accumulation type), the matching
// weight slice goes beside it ([tile_co][chunk_c * K]), and each thread accumulates up to
// kFusedOutputs outputs in registers. Shared memory stays within 48 KiB, so no opt-in is needed
// and every plan runs on Pascal.
#pragma once

#include <algorithm>
#include <cstdint>

#include "deform_conv2d/deform_conv2d_algo.h"
#include "deform_conv2d/deform_conv2d_kernel.h"

namespace hybridops {
namespace dcn {

constexpr int kFusedThreads = 256;
constexpr int kFusedPairs = 2;     // (tap, pixel) pairs whose corners a thread keeps
constexpr int kFusedOutputs = 8;   // outputs a thread accumulates
constexpr int64_t kFusedSmemBytes = 48 * 1024;
// auto picks the fused forward up to this many input and output channels per group (HybridNetSeg's
// layers: 16-80); wider layers keep the GEMM (tensor cores through cuBLAS, and a weight slice that
// the fused kernel would re-read per pixel tile).
constexpr int64_t kFusedAutoMaxChannels = 128;

struct FusedPlan {
  int tile_p = 0;   // 0: the fused kernel does not cover this shape
  int tile_co = 0;
  int chunk_c = 0;
  int64_t smem_bytes = 0;
  const char* why_not = nullptr;
};

inline FusedPlan plan_fused_forward(const Geometry& g, int64_t cout_per_group, int64_t acc_size) {
  FusedPlan plan;
  const int64_t K = g.taps();
  if (g.height * g.width >= (int64_t(1) << 31)) {
    plan.why_not = "an input plane of 2^31 or more elements";
    return plan;
  }
  for (int tp : {64, 32, 16, 8, 4}) {
    if (K * tp <= int64_t(kFusedThreads) * kFusedPairs) {
      plan.tile_p = tp;
      break;
    }
  }
  if (plan.tile_p == 0) {
    plan.why_not = "a kernel of more than 128 taps";
    return plan;
  }
  plan.tile_co = static_cast<int>(std::min<int64_t>(cout_per_group, kFusedThreads * kFusedOutputs / plan.tile_p));
  for (int cc : {16, 8, 4, 2, 1}) {
    const int64_t bytes = (int64_t(cc) * K * plan.tile_p + int64_t(plan.tile_co) * cc * K) * acc_size;
    if (bytes <= kFusedSmemBytes) {
      plan.chunk_c = cc;
      plan.smem_bytes = bytes;
      break;
    }
  }
  if (plan.chunk_c == 0) {
    plan.tile_p = 0;
    plan.why_not = "tiles that do not fit 48 KiB of shared memory";
  }
  return plan;
}

// Whether the CUDA forward runs fused: HYBRIDOPS_DCN_ALGO when set (fused on a shape the kernel does
// not cover is an error naming the reason), else fused when the plan covers the shape and the layer
// has at most kFusedAutoMaxChannels input and output channels per group.
inline bool use_fused_forward(const FusedPlan& plan, int64_t cin_per_group, int64_t cout_per_group) {
  const Algo algo = requested_algo();
  if (algo == Algo::kIm2col) return false;
  if (algo == Algo::kFused) {
    TORCH_CHECK(plan.tile_p > 0, "hybridops.deform_conv2d: HYBRIDOPS_DCN_ALGO=fused, but the fused CUDA kernel does "
                "not cover ", plan.why_not, " (unset it to let the im2col path run)");
    return true;
  }
  return plan.tile_p > 0 && cin_per_group <= kFusedAutoMaxChannels && cout_per_group <= kFusedAutoMaxChannels;
}

}  // namespace dcn
}  // namespace hybridops
