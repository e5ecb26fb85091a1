// The launch plan of the fused CUDA forward of deform_conv2d (deform_conv2d_fused_cuda.cuh), a pure
// host function shared by the launcher and the tests, and the rule that picks the algorithm.
//
// A block computes a tile of tile_p output pixels of one image times tile_co output channels of one
// weight group. Each of its kFusedThreads threads keeps the bilinear corners of up to kFusedPairs
// (tap, pixel) pairs in registers (computed once per offset group), samples chunk_c input channels
// at a time into shared memory ([chunk_c * K][tile_p], in the accumulation type), the matching
// weight slice goes beside it, transposed ([chunk_c * K][tile_co rounded up to 4]), and each thread
// accumulates a register tile of 2 pixels x 4 channels (kFusedOutputs), one 64-bit sample load and
// one 128-bit weight load per (channel, tap) row for its 8 FMAs. Shared memory stays within 48 KiB,
// so no opt-in is needed and every plan runs on Pascal.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "deform_conv2d/deform_conv2d_algo.h"
#include "deform_conv2d/deform_conv2d_kernel.h"

namespace hybridops {
namespace dcn {

constexpr int kFusedThreads = 256;
constexpr int kFusedPairs = 2;     // (tap, pixel) pairs whose corners a thread keeps
constexpr int kFusedOutputs = 8;   // outputs a thread accumulates: a register tile of
constexpr int kFusedPixelsPerThread = 2;    // 2 neighbouring pixels (one 64-bit load of samples)
constexpr int kFusedChannelsPerThread = 4;  // x 4 neighbouring channels (one 128-bit load of weights)
static_assert(kFusedPixelsPerThread * kFusedChannelsPerThread == kFusedOutputs, "a thread's register tile");
constexpr int64_t kFusedSmemBytes = 48 * 1024;
// What auto picks, from the traffic model (benchmarks/dcn_roofline.py; no GPU has timed either
// path yet): the fused kernels up to this many input and output channels per group, where saving
// the columns round trip outweighs their micro-GEMMs against cuBLAS. The register-tiled FMA forward
// is predicted ahead of the im2col forward by 1.2x or more up to 64 channels on the H100, H200 and
// GTX 1080 Ti in fp32 and fp16 (H200 fp32: 3.2x at 16 channels, 2.1x at 64), tied or behind at 80
// (a second channel tile of 16 real channels; 0.69x in fp16 on the 1080 Ti). The fused backward:
// ahead at 16 channels (H200 fp32: 3.1x torchvision, im2col 2.2x), behind from 40.
constexpr int64_t kFusedAutoForwardMaxChannels = 64;
constexpr int64_t kFusedAutoBackwardMaxChannels = 16;
// The tensor-core forward (fp16/bf16 on sm_80+, rows padded against bank conflicts): the same model
// puts it ahead of im2col up to 192 channels per group (H200 fp16: 21 vs 64 us at 16 channels,
// 15 vs 33 at 80, 41 vs 54 at 192) and behind at 256 (70 vs 66 us).
constexpr int64_t kFusedAutoTensorCoreForwardMaxChannels = 192;

struct FusedPlan {
  int tile_p = 0;   // 0: the fused kernel does not cover this shape
  int tile_co = 0;
  int chunk_c = 0;
  int64_t smem_bytes = 0;
  const char* why_not = nullptr;
};

// The largest channel chunk of 16, 8, 4, 2, 1 whose tiles fit 48 KiB (bytes(cc) their size), 0 if
// none does; its bytes go to *smem_bytes.
template <typename Bytes>
int largest_fitting_chunk(Bytes bytes, int64_t* smem_bytes) {
  for (int cc : {16, 8, 4, 2, 1}) {
    if (bytes(cc) <= kFusedSmemBytes) {
      *smem_bytes = bytes(cc);
      return cc;
    }
  }
  return 0;
}

// n rows rounded up to whole register tiles (kFusedChannelsPerThread rows): backward kernel A's
// transposed weight chunk [cout_g][rows], whose padding rows are zero.
HOST_DEVICE_INLINE int fused_rows_in_tiles(int64_t n) { return static_cast<int>(round_up(n, kFusedChannelsPerThread)); }

// The row stride of the fused forward's transposed weight tile [chunk_c * K][channels]: tile_co
// rounded up to whole register tiles, plus one register tile of padding (its transposing stores
// then fall in different banks).
HOST_DEVICE_INLINE int fused_weight_row_stride(int tile_co) {
  return fused_rows_in_tiles(tile_co) + kFusedChannelsPerThread;
}

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
  const int64_t ld_w = fused_weight_row_stride(plan.tile_co);
  plan.chunk_c = largest_fitting_chunk(
      [&](int cc) { return (int64_t(cc) * K * plan.tile_p + ld_w * cc * K) * acc_size; }, &plan.smem_bytes);
  if (plan.chunk_c == 0) {
    plan.tile_p = 0;
    plan.why_not = "tiles that do not fit 48 KiB of shared memory";
  }
  TORCH_INTERNAL_ASSERT(plan.tile_p / kFusedPixelsPerThread * (fused_rows_in_tiles(plan.tile_co) / kFusedChannelsPerThread) <=
                            kFusedThreads,
                        "a fused forward tile needs more register tiles than the block has threads");
  return plan;
}

// The tensor-core variant of the fused forward (fp16/bf16 on sm_80+, deform_conv2d_fused_tc_cuda.cuh):
// the FMA plan's grid, pixel tile and channel tile, with shared memory laid out for 16x16x16 wmma
// tiles: samples in the storage type [rows_pad][tile_p + pad], the weight slice in the storage type
// [tile_co_pad][rows_pad + pad] (rows = chunk_c * K rounded up to 16, channels to 16; the padding is
// zero), and a float staging tile [tile_co_pad][tile_p + pad / 2] for the accumulators. Every row is
// kFusedMmaRowPad 16-bit elements (16 bytes) longer than its data, so the ldmatrix loads of a
// fragment (8 rows of 16 bytes a phase) and the accumulator stores hit 8 different 16-byte bank
// groups: no bank conflicts (unpadded, the 64-byte sample rows of a 32-pixel tile are a 4-way
// conflict; benchmarks/dcn_roofline.py counts both). Each of the 8 warps owns at most one 16x16
// output fragment: tile_co x tile_p <= 2048 outputs (the FMA plan's bound) is at most 8 fragments.
// chunk_c is this variant's own: the largest of 16, 8, 4, 2, 1 whose tiles fit 48 KiB.
constexpr int kFusedMmaTile = 16;
constexpr int kFusedMmaRowPad = 8;

struct FusedTcPlan {
  FusedPlan base;     // tile_p, tile_co, chunk_c, smem_bytes of this variant; tile_p 0: not covered
  int rows_pad = 0;   // chunk_c * K rounded up to kFusedMmaTile
  int tile_co_pad = 0;
};

HOST_DEVICE_INLINE int round_up_to_mma_tile(int64_t v) { return static_cast<int>(round_up(v, kFusedMmaTile)); }

// Bytes of the tensor-core tiles (row strides as in the kernel).
inline int64_t fused_tc_smem_bytes(int tile_p, int tile_co_pad, int rows_pad) {
  return 2 * (int64_t(rows_pad) * (tile_p + kFusedMmaRowPad) + int64_t(tile_co_pad) * (rows_pad + kFusedMmaRowPad)) +
         4 * int64_t(tile_co_pad) * (tile_p + kFusedMmaRowPad / 2);
}

inline FusedTcPlan plan_fused_forward_tc(const Geometry& g, int64_t cout_per_group) {
  FusedTcPlan tc;
  tc.base = plan_fused_forward(g, cout_per_group, 4);
  FusedPlan& plan = tc.base;
  if (plan.tile_p == 0) return tc;
  if (plan.tile_p % kFusedMmaTile != 0) {
    plan.tile_p = 0;
    plan.why_not = "a pixel tile smaller than 16 (more than 32 taps)";
    return tc;
  }
  const int64_t K = g.taps();
  tc.tile_co_pad = round_up_to_mma_tile(plan.tile_co);
  plan.chunk_c = largest_fitting_chunk(
      [&](int cc) { return fused_tc_smem_bytes(plan.tile_p, tc.tile_co_pad, round_up_to_mma_tile(cc * K)); },
      &plan.smem_bytes);
  tc.rows_pad = round_up_to_mma_tile(plan.chunk_c * K);
  if (plan.chunk_c == 0) {
    plan.tile_p = 0;
    plan.why_not = "tensor-core tiles that do not fit 48 KiB of shared memory";
  }
  TORCH_INTERNAL_ASSERT(tc.tile_co_pad / kFusedMmaTile * (plan.tile_p / kFusedMmaTile) <= kFusedThreads / 32,
                        "a fused tensor-core tile needs more fragments than the block has warps");
  return tc;
}

// The fused backward: two sampling kernels and a reduction (deform_conv2d_fused_cuda.cuh).
//   A (pixel tiles): grad_columns tiles = W^T @ grad_out in shared memory, chunk by chunk; grad_offset
//     and grad_mask reduced over the offset group's channels in registers by the thread that owns the
//     (tap, pixel) pair (no atomics); grad_input scattered (atomics, or FixedPointAdd when
//     deterministic). Shared memory: grad_out [tile_co = cout_g][tile_p], weight chunk
//     [chunk_a * K][cout_g], grad_columns [chunk_a * K][tile_p].
//   B (channel chunks): for chunk_b channels, the grad_weight entries [cout_g][chunk_b * K] summed
//     over the (image, pixel tile) items item_chunks apart (one thread per entry, up to
//     kFusedWeightOutputs each), into per-chunk partials; a second kernel sums them in chunk order:
//     deterministic, the same bits on every GPU (the chunking depends on the shape only).
constexpr int kFusedWeightOutputs = 16;
// B's grid: item chunks x channel chunks, at least kFusedItemChunks item chunks and about
// kFusedTargetBlocks blocks in all (two per SM of a 132-SM GPU); a function of the shape only.
constexpr int64_t kFusedItemChunks = 32;
constexpr int64_t kFusedTargetBlocks = 264;

struct FusedBackwardPlan {
  int tile_p = 0;  // 0: not covered
  int chunk_a = 0, chunk_b = 0;
  int64_t smem_a = 0, smem_b = 0;
  int64_t item_chunks = 0;
  const char* why_not = nullptr;
};

inline FusedBackwardPlan plan_fused_backward(const Geometry& g, int64_t cin_per_group, int64_t cout_per_group,
                                             int64_t acc_size) {
  FusedBackwardPlan plan;
  const FusedPlan fwd = plan_fused_forward(g, cout_per_group, acc_size);
  if (fwd.tile_p == 0) {
    plan.why_not = fwd.why_not;
    return plan;
  }
  const int64_t K = g.taps(), co = cout_per_group;
  // B's channel chunks divide both the group's and the offset group's channels (never cross either).
  const int64_t common = std::gcd(cin_per_group, g.channels_per_offset_group());
  for (int tp = fwd.tile_p; tp >= 4 && plan.tile_p == 0; tp /= 2) {
    int a = 0, b = 0;
    for (int cc : {16, 8, 4, 2, 1}) {
      if (a == 0 && (co * tp + fused_rows_in_tiles(cc * K) * co + cc * K * tp) * acc_size <= kFusedSmemBytes) a = cc;
      if (b == 0 && common % cc == 0 && co * cc * K <= int64_t(kFusedThreads) * kFusedWeightOutputs &&
          (cc * K * (tp + 1) + co * tp) * acc_size <= kFusedSmemBytes) {
        b = cc;
      }
    }
    if (a > 0 && b > 0) {
      plan.tile_p = tp;
      plan.chunk_a = a;
      plan.chunk_b = b;
      plan.smem_a = (co * tp + fused_rows_in_tiles(a * K) * co + a * K * tp) * acc_size;
      plan.smem_b = (b * K * (tp + 1) + co * tp) * acc_size;  // sample rows padded: no bank conflicts
    }
  }
  if (plan.tile_p == 0) {
    plan.why_not = "more output channels per group than its tiles hold";
    return plan;
  }
  const int64_t items = g.batch * ceil_div(g.out_pixels(), plan.tile_p);
  const int64_t channel_chunks = g.channels / plan.chunk_b;
  const int64_t wanted = std::max<int64_t>(kFusedItemChunks, (kFusedTargetBlocks + channel_chunks - 1) / channel_chunks);
  plan.item_chunks = std::max<int64_t>(1, std::min<int64_t>(items, wanted));
  return plan;
}

// Whether the CUDA forward (or backward) runs fused: HYBRIDOPS_DCN_ALGO when set (fused on a shape
// the kernels do not cover is an error naming the reason), else fused when the plan covers the shape
// and the layer has at most auto_max_channels input and output channels per group.
// The same rule for the backward (with its own plan and auto limit).
inline bool use_fused(int tile_p, const char* why_not, int64_t cin_per_group, int64_t cout_per_group,
                      int64_t auto_max_channels) {
  const Algo algo = requested_algo();
  if (algo == Algo::kIm2col) return false;
  if (algo == Algo::kFused) {
    TORCH_CHECK(tile_p > 0, "hybridops.deform_conv2d: HYBRIDOPS_DCN_ALGO=fused, but the fused CUDA kernels do "
                "not cover ", why_not, " (unset it to let the im2col path run)");
    return true;
  }
  return tile_p > 0 && cin_per_group <= auto_max_channels && cout_per_group <= auto_max_channels;
}

}  // namespace dcn
}  // namespace hybridops
