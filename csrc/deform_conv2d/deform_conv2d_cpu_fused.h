// Fused CPU forward of deform_conv2d: no columns buffer in memory.
//
// The work is split into tasks (image n, tile of TP output pixels), run in parallel with
// at::parallel_for; each thread owns one columns tile [C * K, TP] (kFusedTileBytes, sized to stay
// in its L2 cache) and, per task:
//   1. samples the tile: for each (offset group, tap, pixel) the sampling point, its four
//      neighbours and bilinear weights x mask are computed once (tap_corners_at) and reused by every
//      channel of the offset group (sample_channels, the same code im2col runs, so the sampled
//      values are bit-identical to the im2col path's);
//   2. multiplies it, per weight group, by the weight [Cout / G, C / G * K] straight into the output
//      tile out[n, :, p0 : p0 + TP] (a strided view, row stride Ho * Wo), bias written first and
//      accumulated onto (addmm_, beta = 1): a single-threaded BLAS call inside the task.
// Compared with the im2col path (deform_conv2d_driver.h forward<Backend>): the columns never
// leave the cache (the im2col path writes and re-reads C * K * P values per image, 38 MB at
// 16ch@256^2), the sampling loop walks (tap, pixel) in order instead of decoding every item with
// integer divisions, there is no [G, Cout, nb, P] -> [nb, G, Cout, P] permute copy, and both
// threads run both phases (no multi-threaded GEMM with its barriers).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdint>

#include "deform_conv2d/deform_conv2d_driver.h"

namespace hybridops {
namespace dcn {

// Bytes of one thread's columns tile: half of a 512 KiB L2 (the weight slice shares the rest).
constexpr int64_t kFusedTileBytes = int64_t(256) << 10;
// Fewest pixels per tile, so the GEMM keeps a useful width even when C * K is large.
constexpr int64_t kFusedMinTilePixels = 32;

// Pixels per tile: as many as the tile budget holds (a multiple of 16), at most one image, and
// small enough that there are at least two tasks per thread when the batch is small.
inline int64_t fused_tile_pixels(const Geometry& g, int64_t element_size, int64_t threads) {
  const int64_t P = g.out_pixels();
  const int64_t rows = g.channels * g.taps();
  int64_t tp = std::max<int64_t>(kFusedMinTilePixels, kFusedTileBytes / (rows * element_size) / 16 * 16);
  tp = std::min(tp, P);
  auto tasks = [&](int64_t t) { return g.batch * ((P + t - 1) / t); };
  while (tp > kFusedMinTilePixels && tasks(tp) < 2 * threads) {
    tp = std::max<int64_t>(kFusedMinTilePixels, (tp / 2 + 15) / 16 * 16);
  }
  return tp;
}

// cols[(c * K + k) * ld + j] = mask * bilinear(input[n, c], point of tap k at pixel p0 + j), for
// every channel c and tap k, j in [0, tp).
template <typename scalar_t>
void fused_sample_tile(const Geometry& g, const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                       int64_t n, int64_t p0, int64_t tp, int64_t ld, scalar_t* cols) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.taps(), HW = g.height * g.width, cpg = g.channels_per_offset_group();
  SampleItem<int64_t> it;
  it.b = n;
  for (it.og = 0; it.og < g.offset_groups; ++it.og) {
    const scalar_t* planes = input + (n * g.channels + it.og * cpg) * HW;
    for (it.k = 0; it.k < K; ++it.k) {
      const int64_t kh = it.k / g.kernel_w, kw = it.k % g.kernel_w;
      scalar_t* col = cols + (it.og * cpg * K + it.k) * ld;
      int64_t ho = p0 / g.out_w, wo = p0 % g.out_w;
      for (int64_t j = 0; j < tp; ++j) {
        it.p = p0 + j;
        acc_t m;
        const BilinearCorners<acc_t, int64_t> c4 =
            tap_corners_at<scalar_t, acc_t, int64_t>(g, offset, mask, it, ho, wo, kh, kw, m);
        sample_channels<scalar_t, acc_t, int64_t>(c4, m, planes, HW, col + j, K * ld, cpg);
        if (++wo == g.out_w) {
          wo = 0;
          ++ho;
        }
      }
    }
  }
}

// The fused forward (see the top of this file); same arguments and result as forward<Backend>.
inline at::Tensor forward_fused_cpu(const ForwardArgs& a) {
  const Geometry& g = a.g;
  at::Tensor out = forward_output(a);
  const int64_t N = g.batch, P = g.out_pixels(), K = g.taps(), G = a.groups;
  if (N == 0) return out;
  const int64_t Cout = a.weight.size(0), Cg = Cout / G, rows = g.channels * K, rows_g = rows / G;
  const int64_t tp_max = fused_tile_pixels(g, a.input.element_size(), at::get_num_threads());
  const int64_t tiles = (P + tp_max - 1) / tp_max;
  const at::Tensor w_g = a.weight.view({G, Cg, rows_g});
  const at::Tensor out_rows = out.view({N, Cout, P});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.input.scalar_type(), "deform_conv2d_fused_cpu", [&] {
    const scalar_t* in = a.input.data_ptr<scalar_t>();
    const scalar_t* off = a.offset.data_ptr<scalar_t>();
    const scalar_t* msk = g.use_mask ? a.mask->data_ptr<scalar_t>() : nullptr;
    // The tile GEMMs are dispatcher calls on the worker threads: give them this thread's state
    // (below autograd, as a kernel runs; the profiler sees them).
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, N * tiles, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      const at::Tensor cols = at::empty({rows, tp_max}, a.input.options());  // this thread's tile
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / tiles, p0 = (task % tiles) * tp_max, tp = std::min(tp_max, P - p0);
        fused_sample_tile<scalar_t>(g, in, off, msk, n, p0, tp, tp_max, cols.data_ptr<scalar_t>());
        const at::Tensor out_tile = out_rows.select(0, n).narrow(1, p0, tp);  // [Cout, tp], row stride P
        for (int64_t grp = 0; grp < G; ++grp) {
          at::Tensor o = out_tile.narrow(0, grp * Cg, Cg);
          const at::Tensor c = cols.narrow(0, grp * rows_g, rows_g).narrow(1, 0, tp);
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
