// Fused CPU forward of deform_conv2d: no columns buffer in memory.
//
// The input is read as NHWC (one transposed copy per call, none when it is channels-last), so the
// channels of one sampling point's neighbour are contiguous. The work is split into tasks (image
// n, tile of TP output pixels), run in parallel with at::parallel_for; each thread owns one
// columns tile, pixel-major: row j (pixel p0 + j) holds, per weight group, [K, C / G] sampled
// values (kFusedTileBytes in all, sized to stay in its L2 cache). Per task it
//   1. samples the tile: for each (offset group, tap, pixel) the sampling point, its four
//      neighbours and bilinear weights x mask are computed once (tap_corners_at) and the channels
//      of the offset group sampled in one contiguous vector loop (sample_point_contiguous: the
//      same arithmetic as im2col's, so the sampled values are bit-identical);
//   2. multiplies it, per weight group, by the weight permuted to [Cout / G, K, C / G] straight
//      into the output tile out[n, :, p0 : p0 + TP] (a strided view, row stride Ho * Wo), bias
//      written first and accumulated onto (addmm_, beta = 1): a single-threaded BLAS call.
// Compared with the im2col path (deform_conv2d_driver.h forward<Backend>): the columns never
// leave the cache (the im2col path writes and re-reads C * K * P values per image, 38 MB at
// 16ch@256^2), the sampling is vectorised over channels and walks (tap, pixel) in order instead
// of decoding every item with integer divisions, there is no [G, Cout, nb, P] -> [nb, G, Cout, P]
// permute copy, and both threads run both phases (no multi-threaded GEMM with its barriers).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "deform_conv2d/deform_conv2d_driver.h"

namespace hybridops {
namespace dcn {

// Bytes of one thread's columns tile: half of a 512 KiB L2 (the weight slice shares the rest).
constexpr int64_t kFusedTileBytes = int64_t(256) << 10;
// Fewest pixels per tile, so the GEMM keeps a useful width even when C * K is large.
constexpr int64_t kFusedMinTilePixels = 32;

// HYBRIDOPS_DCN_ALGO=auto on the CPU takes the fused forward for every dtype and shape except when
// the weight (Cout x C/G x kH x kW, in the input's dtype) is larger than this: every pixel tile
// multiplies by the whole weight, so a weight that cannot stay in the last-level cache is re-read
// from memory once per tile. Measured side by side (2 threads, benchmarks/deform_conv2d.py and
// 1-2 image probes): fused vs im2col forward 2.6-4x faster at HybridNetSeg's fp32 shapes (weights
// up to 0.23 MB), 6-19x in fp16/bf16, 2.2x at 256ch@64^2 b8 (2.4 MB), 1.5x at 512ch@32^2 b2
// (9.4 MB), but 0.63x at 1024ch@16^2 b1 (38 MB).
constexpr int64_t kFusedMaxWeightBytes = int64_t(16) << 20;

inline bool fused_forward_preferred(const ForwardArgs& a) {
  return a.weight.numel() * a.weight.element_size() <= kFusedMaxWeightBytes;
}

// Pixels per tile: as many as the tile budget holds (a multiple of 16), at most one image, and
// small enough that there are at least four tasks per thread (for the dynamic balance).
inline int64_t fused_tile_pixels(const Geometry& g, int64_t element_size, int64_t threads) {
  const int64_t P = g.out_pixels();
  const int64_t rows = g.channels * g.taps();
  int64_t tp = std::max<int64_t>(kFusedMinTilePixels, kFusedTileBytes / (rows * element_size) / 16 * 16);
  tp = std::min(tp, P);
  auto tasks = [&](int64_t t) { return g.batch * ((P + t - 1) / t); };
  while (tp > kFusedMinTilePixels && tasks(tp) < 4 * threads) {
    tp = std::max<int64_t>(kFusedMinTilePixels, (tp / 2 + 15) / 16 * 16);
  }
  return tp;
}

// Where the channels of one offset group land in a tile row: runs of channels [c, c + len) that
// stay inside one weight group, at column (group * K + k) * (C / G) + c % (C / G) for tap k.
struct ChannelRun {
  int64_t first, len, column;  // first channel (relative to the offset group), count, column at k = 0
};

inline std::vector<ChannelRun> channel_runs(const Geometry& g, int64_t og, int64_t cin_g) {
  std::vector<ChannelRun> runs;
  const int64_t cpg = g.channels_per_offset_group(), c_begin = og * cpg, K = g.taps();
  for (int64_t c = c_begin; c < c_begin + cpg;) {
    const int64_t grp = c / cin_g, cg = c % cin_g, len = std::min(c_begin + cpg - c, cin_g - cg);
    runs.push_back({c - c_begin, len, grp * K * cin_g + cg});
    c += len;
  }
  return runs;
}

// cols[j * ld + (group * K + k) * (C / G) + c % (C / G)] = mask * bilinear(input[n, c], point of
// tap k at pixel p0 + j), for every channel c, tap k and j in [0, tp). `input` is NHWC; `acc` holds
// C / OG values of the accumulation type.
template <typename scalar_t>
void fused_sample_tile(const Geometry& g, const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                       int64_t cin_g, int64_t n, int64_t p0, int64_t tp, int64_t ld, scalar_t* cols,
                       at::opmath_type<scalar_t>* acc) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.taps(), HW = g.height * g.width, C = g.channels, cpg = g.channels_per_offset_group();
  SampleItem<int64_t> it;
  it.b = n;
  for (it.og = 0; it.og < g.offset_groups; ++it.og) {
    const std::vector<ChannelRun> runs = channel_runs(g, it.og, cin_g);
    const bool in_place = std::is_same<scalar_t, acc_t>::value && runs.size() == 1;
    const scalar_t* pixels = input + n * HW * C + it.og * cpg;
    for (it.k = 0; it.k < K; ++it.k) {
      const int64_t kh = it.k / g.kernel_w, kw = it.k % g.kernel_w;
      int64_t ho = p0 / g.out_w, wo = p0 % g.out_w;
      for (int64_t j = 0; j < tp; ++j) {
        it.p = p0 + j;
        acc_t m;
        const BilinearCorners<acc_t, int64_t> c4 =
            tap_corners_at<scalar_t, acc_t, int64_t>(g, offset, mask, it, ho, wo, kh, kw, m);
        scalar_t* row = cols + j * ld + it.k * cin_g;
        // fp32/fp64 with the group's channels contiguous in the row: sampled in place
        acc_t* v = in_place ? reinterpret_cast<acc_t*>(row + runs[0].column) : acc;
        sample_point_contiguous<scalar_t, acc_t, int64_t>(c4, m, pixels, C, cpg, v);
        if (!in_place) {
          for (const ChannelRun& r : runs) {
            for (int64_t c = 0; c < r.len; ++c) row[r.column + c] = static_cast<scalar_t>(acc[r.first + c]);
          }
        }
        if (++wo == g.out_w) {  // the next output pixel
          wo = 0;
          ++ho;
        }
      }
    }
  }
}

// The fused forward (see the top of this file); same arguments and result as forward<Backend>,
// except that a.input may also be channels-last (it is gathered from NHWC; offset and mask NCHW).
inline at::Tensor forward_fused_cpu(const ForwardArgs& a) {
  const Geometry& g = a.g;
  at::Tensor out = forward_output(a);
  const int64_t N = g.batch, P = g.out_pixels(), K = g.taps(), G = a.groups;
  if (N == 0) return out;
  const int64_t Cout = a.weight.size(0), Cg = Cout / G, cin_g = a.weight.size(1), rows = g.channels * K;
  const int64_t rows_g = rows / G;
  const int64_t tp_max = fused_tile_pixels(g, a.input.element_size(), at::get_num_threads());
  const int64_t tiles = (P + tp_max - 1) / tp_max;
  const at::Tensor input = a.input.permute({0, 2, 3, 1}).contiguous();  // NHWC (no copy of a channels-last input)
  // [G, Cout / G, K, C / G]: the tile rows' order
  const at::Tensor w_g = a.weight.view({G, Cg, cin_g, K}).transpose(2, 3).contiguous().view({G, Cg, rows_g});
  const at::Tensor out_rows = out.view({N, Cout, P});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_fused_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* off = a.offset.data_ptr<scalar_t>();
    const scalar_t* msk = g.use_mask ? a.mask->data_ptr<scalar_t>() : nullptr;
    // The tile GEMMs are dispatcher calls on the worker threads: give them this thread's state
    // (below autograd, as a kernel runs; the profiler sees them).
    const at::ThreadLocalState caller_state;
    // One worker per thread, each taking the next task from a shared counter until none is left:
    // on a loaded machine a thread that gets less CPU time takes fewer tiles (a static split would
    // wait for it). Each tile's arithmetic does not depend on the thread: the result is the same.
    const int64_t tasks = N * tiles;
    std::atomic<int64_t> next_task{0};
    at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), tasks), 1, [&](int64_t, int64_t) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      const at::Tensor cols = at::empty({tp_max, rows}, input.options());  // this thread's tile
      std::vector<acc_t> acc(g.channels_per_offset_group());
      for (int64_t task; (task = next_task.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
        const int64_t n = task / tiles, p0 = (task % tiles) * tp_max, tp = std::min(tp_max, P - p0);
        fused_sample_tile<scalar_t>(g, in, off, msk, cin_g, n, p0, tp, rows, cols.data_ptr<scalar_t>(), acc.data());
        const at::Tensor out_tile = out_rows.select(0, n).narrow(1, p0, tp);  // [Cout, tp], row stride P
        for (int64_t grp = 0; grp < G; ++grp) {
          at::Tensor o = out_tile.narrow(0, grp * Cg, Cg);
          const at::Tensor c = cols.narrow(0, 0, tp).narrow(1, grp * rows_g, rows_g).t();  // [rows_g, tp]
          if (a.bias.has_value()) {
            o.copy_(a.bias->narrow(0, grp * Cg, Cg).unsqueeze(1).expand({Cg, tp}));
            o.addmm_(w_g.select(0, grp), c);
          } else {
            at::mm_out(o, w_g.select(0, grp), c);
          }
        }
      }
    });
  });
  return out;
}

}  // namespace dcn
}  // namespace hybridops
