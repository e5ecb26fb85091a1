// Launch planning of the CUDA kernels of mixed_depthwise_conv2d, as pure host functions: no device
// query inside, so the CPU build compiles them too, the CUDA emulation (HYBRIDOPS_MDC_EMULATE_CUDA=1)
// runs the very same plans, and the tests call them for any "GPU" (torch.ops.hybridops._mdc_plan).
//
// Tiles. A block is kTX x kTY threads; thread (tx, ty) owns column tx (tx < tile_w) and rows
// ty + u * kTY, u < rows_per_thread, of the block's tile, so a tile is (kTY * rows_per_thread) x
// tile_w. Its shared memory grows with stride * tile_w + dilation * (k - 1) per dimension and with
// the accumulation type (fp64 doubles it), so the plan takes the first tile that fits the device's
// real per-block limit among 32 x 32, 16 x 32, 8 x 32, 8 x 16 and 8 x 8 (height x width; narrow
// tiles leave threads idle, but keep large strides running). Pascal (sm_61) allows 48 KiB and
// cannot opt in to more; Volta and newer opt in to 96-227 KiB. Only when even the 8 x 8 tile does
// not fit does the op raise.
//
// grad_weight order. Its result is the only one whose bits depend on the tiling: per channel the
// (image, tile) items are dealt to `chunks` partial sums (item i to chunk i % chunks), each summed
// in item order (within an item: tile rows, then a fixed warp-shuffle tree over the 32 columns), and
// the chunks are added in chunk order. The plan makes all of that a function of the shapes only:
// the tile comes from a fixed 48 KiB budget on every GPU (the device limit is used only when even
// the smallest tile needs more), and `chunks` from a fixed block target, never from the SM count.
// The SM count only sizes the grid, whose blocks take chunks blockIdx.x, blockIdx.x + gridDim.x, ...:
// a different grid assigns the same chunks to different blocks, never changes a chunk's sum.
#pragma once

#include <algorithm>
#include <cstdint>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_kernel.h"

namespace hybridops {
namespace mdc {

enum class PlanPass : int { kForward = 0, kGradInputGather = 1, kGradWeight = 2 };

// Shared memory every GPU gives a block without opting in (and all that sm_61 has).
constexpr int64_t kPortableSmemBytes = 48 * 1024;
// grad_weight blocks (channels x chunks) aimed for, whatever the GPU: 2048 is about 15 waves of
// 8 resident blocks on a 16-SM GPU and 2 on a 132-SM one.
constexpr int64_t kGradWeightTargetBlocks = 2048;

struct TilePlan {
  int rows_per_thread;  // 4, 2 or 1; 0 when not even the smallest tile fits
  int tile_h, tile_w;   // output tile (forward, grad_weight) or input-pixel tile (grad_input gather)
  int64_t smem_bytes;   // dynamic shared memory of one block
};

// Candidate tiles, largest first: (rows per thread, tile width).
constexpr int kTileCandidates[][2] = {{4, 32}, {2, 32}, {1, 32}, {1, 16}, {1, 8}};

// Shared memory (bytes) of one block of `pass` for a size-k kernel and a tile_h x tile_w tile
// (grad_weight keeps its grad_output buffer kTileW wide).
inline int64_t smem_bytes(PlanPass pass, int64_t elem_size, int k, int sh, int sw, int dh, int dw, int tile_h,
                          int tile_w) {
  const int64_t kk = int64_t(k) * k;
  if (pass == PlanPass::kGradInputGather) {
    const int64_t rows = (tile_h - 1 + int64_t(k - 1) * dh) / sh + 2;
    const int64_t cols = (tile_w - 1 + int64_t(k - 1) * dw) / sw + 2;
    return (kk + rows * cols) * elem_size;
  }
  const int64_t rows = int64_t(tile_h - 1) * sh + int64_t(k - 1) * dh + 1;
  const int64_t cols = int64_t(tile_w - 1) * sw + int64_t(k - 1) * dw + 1;
  const int64_t row_stride = (cols + sw - 1) / sw * sw;
  const int64_t tile = rows * row_stride;
  return (pass == PlanPass::kGradWeight ? tile + int64_t(tile_h) * kTileW + kk : kk + tile) * elem_size;
}

// The largest tile whose blocks fit `limit` bytes for every kernel size in ks[0, num_k) (one launch
// serves all groups, so they share the tile).
inline TilePlan plan_tile(PlanPass pass, int64_t elem_size, const int32_t* ks, int num_k, int sh, int sw, int dh,
                          int dw, int64_t limit) {
  for (const auto& cand : kTileCandidates) {
    const int rpt = cand[0], tile_w = cand[1];
    int64_t bytes = 0;
    for (int i = 0; i < num_k; ++i) {
      bytes = std::max(bytes, smem_bytes(pass, elem_size, ks[i], sh, sw, dh, dw, kTY * rpt, tile_w));
    }
    if (bytes <= limit) return TilePlan{rpt, kTY * rpt, tile_w, bytes};
  }
  return TilePlan{0, 0, 0, 0};
}

// The plan of `pass` on a device allowing `device_limit` bytes per block. grad_weight plans for the
// portable 48 KiB first (the same tile, hence the same bits, on every GPU).
inline TilePlan plan_pass(PlanPass pass, int64_t elem_size, const Geometry& g, int64_t device_limit) {
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  if (pass == PlanPass::kGradWeight) {
    const TilePlan p = plan_tile(pass, elem_size, g.kernel, g.num_groups, sh, sw, dh, dw,
                                 std::min(device_limit, kPortableSmemBytes));
    if (p.rows_per_thread > 0) return p;
  }
  return plan_tile(pass, elem_size, g.kernel, g.num_groups, sh, sw, dh, dw, device_limit);
}

// grad_weight partial sums per channel: the (image, tile) items are dealt to this many chunks.
// Shapes only (never the SM count): enough blocks for any GPU, never more chunks than items.
inline int64_t grad_weight_chunks(int64_t batch, int64_t out_h, int64_t out_w, int64_t channels, int tile_h,
                                  int tile_w) {
  const int64_t items = batch * ((out_h + tile_h - 1) / tile_h) * ((out_w + tile_w - 1) / tile_w);
  const int64_t want = (kGradWeightTargetBlocks + channels - 1) / channels;
  return std::max<int64_t>(1, std::min(items, want));
}

// Blocks per channel that the grid launches for `chunks` chunks on `sms` SMs (each block walks
// chunks blockIdx.x, blockIdx.x + gridDim.x, ...). Only the speed depends on it, not the result.
inline int64_t grad_weight_grid_x(int64_t chunks, int64_t channels, int64_t sms) {
  const int64_t fill = (32 * std::max<int64_t>(sms, 1) + channels - 1) / channels;  // ~4 waves of 8 blocks
  return std::max<int64_t>(1, std::min(chunks, fill));
}

}  // namespace mdc
}  // namespace hybridops
