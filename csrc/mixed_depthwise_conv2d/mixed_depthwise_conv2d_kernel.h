// Per-element math of the mixed-kernel depthwise convolution (MixConv), shared by the CPU and
// CUDA kernels.
//
// The channels are split into groups [group_begin[g], group_begin[g+1]); group g uses a square odd
// kernel of size k_g with timm's padding p = ((stride - 1) + dilation * (k_g - 1)) / 2 per dimension
// (= dilation * (k_g - 1) / 2 + (stride - 1) / 2, as dilation * (k_g - 1) is even), so every group
// has the same output size  H_out = (H - 1 + 2 * ((stride_h - 1) / 2)) / stride_h + 1 (ceil(H / s)
// at strides 1 and 2; 17 -> 7 at stride 3, 16 -> 5 at stride 4, as timm's MixedConv2d).
//
// All bodies below work on a *padded tile*: a float (double for double) copy of a region of one
// channel plane with its zero halo already in place, so the inner loops have no bounds checks and
// read/accumulate in the accumulation type whatever the storage dtype. The CPU uses one tile per
// whole plane, the GPU a shared-memory tile per block. Columns of a tile row are stored
// *phase-split* by the horizontal stride s: padded column x lives at
//     row * row_stride + (x % s) * phase_len + x / s,
// so the s-strided reads of consecutive outputs (x = wo * s + j * d) are contiguous in memory
// (for s = 1 this is the plain row-major layout). That keeps stride-2 loops vectorisable on the
// CPU and bank-conflict free on the GPU.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/host_device.h"

// Forced inlining also on the host: the CPU launcher compiles the bodies into ISA-specific clones
// (AVX2 / AVX-512), which only works when they are inlined into the clone.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MDC_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define MDC_INLINE inline __attribute__((always_inline))
#else
#define MDC_INLINE inline
#endif

#if defined(__CUDA_ARCH__)
#define MDC_PRAGMA_UNROLL _Pragma("unroll")
#else
#define MDC_PRAGMA_UNROLL
#endif

namespace hybridops {
namespace mdc {

// Groups per op call: the group table travels by value as a kernel argument.
constexpr int kMaxGroups = 32;

// timm's padding for a size-k kernel at stride s, dilation d: ((s - 1) + d * (k - 1)) / 2.
HOST_DEVICE_INLINE int64_t same_pad(int64_t k, int64_t s, int64_t d) { return ((s - 1) + d * (k - 1)) / 2; }

// Output extent of an n-long dimension under that padding (the same for every odd k); 0 for n == 0.
HOST_DEVICE_INLINE int64_t out_extent(int64_t n, int64_t s) { return n > 0 ? (n - 1 + 2 * ((s - 1) / 2)) / s + 1 : 0; }

struct Geometry {
  int64_t batch, channels, height, width;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w;
  int64_t dil_h, dil_w;
  int32_t num_groups;
  int32_t max_kernel;
  int32_t group_begin[kMaxGroups + 1];  // first channel of each group; group_begin[num_groups] == channels
  int32_t kernel[kMaxGroups];           // kernel size of each group (odd, >= 1)

  // The group of channel c (a short linear scan: there are only a few groups).
  HOST_DEVICE_INLINE int group_of(int64_t c) const {
    int g = 0;
    while (g + 1 < num_groups && c >= group_begin[g + 1]) ++g;
    return g;
  }
  HOST_DEVICE_INLINE int64_t pad_h(int k) const { return same_pad(k, stride_h, dil_h); }
  HOST_DEVICE_INLINE int64_t pad_w(int k) const { return same_pad(k, stride_w, dil_w); }
};

// Per-group pointers (weights or their gradients), by value into kernels.
template <typename T>
struct GroupPointers {
  T* ptr[kMaxGroups];
};

// Loads and stores of `vec_t`, which is either the accumulation type itself (GPU: one value per
// thread) or a host SIMD vector of it (CPU: GCC vector extension, several lanes per load).
template <typename vec_t, typename acc_t>
MDC_INLINE vec_t vload(const acc_t* p) {
  if constexpr (std::is_same<vec_t, acc_t>::value) {
    return *p;
  } else {
    vec_t r;
    __builtin_memcpy(&r, p, sizeof(vec_t));
    return r;
  }
}

template <typename vec_t, typename acc_t>
MDC_INLINE void vstore(acc_t* p, const vec_t& v) {
  if constexpr (std::is_same<vec_t, acc_t>::value) {
    *p = v;
  } else {
    __builtin_memcpy(p, &v, sizeof(vec_t));
  }
}

// ----------------------------------------------------------------------------------------------
// Forward (and grad_input at stride 1): U x V accumulators of U output rows from a padded tile.
//   src      : the tile element at padded row ho * stride_h, phase 0, column index of the first
//              output (output wo reads padded columns wo * s + j * d, i.e. phase (j*d) % s, index
//              wo + (j*d)/s)
//   u_stride : tile elements between the U output rows (their padded rows are u_stride apart)
//   w        : the k*k taps of the channel, row-major, in the accumulation type
//   acc      : accumulators (pre-loaded with the bias), updated in place; acc[u][v] covers the
//              outputs starting at src + u * u_stride + v * VS (GPU: one output each, VS = threads
//              apart; CPU: a SIMD vector of consecutive outputs, VS = its lane count).
// Each tap's weight is loaded once for all U x V accumulators. K > 0 is the kernel size known at
// compile time (fully unrolled); K == 0 reads a kh x kw kernel (taps row-major) from kh_rt, kw_rt
// (the CPU passes a sub-window of the taps when the others only ever read the zero padding).
// ----------------------------------------------------------------------------------------------
template <int K, int U, int V, int VS, typename acc_t, typename index_t, typename vec_t>
MDC_INLINE void conv_run(const acc_t* __restrict__ src, index_t row_stride, index_t u_stride, index_t phase_len,
                         int sw, int dh, int dw, int kh_rt, int kw_rt, const acc_t* __restrict__ w,
                         vec_t (&acc)[U][V]) {
  const int kh = K > 0 ? K : kh_rt, kw = K > 0 ? K : kw_rt;
  MDC_PRAGMA_UNROLL
  for (int i = 0; i < kh; ++i) {
    const acc_t* row = src + static_cast<index_t>(i * dh) * row_stride;
    MDC_PRAGMA_UNROLL
    for (int j = 0; j < kw; ++j) {
      const int x = j * dw;
      const acc_t* s = row + static_cast<index_t>(x % sw) * phase_len + x / sw;
      const vec_t wv = vec_t{} + w[i * kw + j];
      MDC_PRAGMA_UNROLL
      for (int u = 0; u < U; ++u) {
        MDC_PRAGMA_UNROLL
        for (int v = 0; v < V; ++v) acc[u][v] += wv * vload<vec_t>(s + u * u_stride + v * VS);
      }
    }
  }
}

// grad_input for stride > 1 (CPU form): scatter `n` outputs of row ho of grad_output (in the
// accumulation type, zero beyond n up to a whole vector) into a padded, phase-split tile of
// grad_input, the exact adjoint of conv_run:
//   tile[ho*s_h + i*d_h][wo*s_w + j*d_w] += w[i, j] * grad_out[ho, wo].
// `dst` is the tile element at padded row ho * stride_h, phase 0, index 0. The caller owns the whole
// tile (one plane per worker), so the scatter is race-free and its order fixed: deterministic.
template <int K, typename acc_t, typename index_t, typename vec_t>
MDC_INLINE void scatter_row(acc_t* __restrict__ dst, index_t row_stride, index_t phase_len, int sw, int dh, int dw,
                            int kh_rt, int kw_rt, const acc_t* __restrict__ w, const acc_t* __restrict__ g,
                            index_t n) {
  constexpr int L = static_cast<int>(sizeof(vec_t) / sizeof(acc_t));
  const int kh = K > 0 ? K : kh_rt, kw = K > 0 ? K : kw_rt;
  for (int i = 0; i < kh; ++i) {
    acc_t* row = dst + static_cast<index_t>(i * dh) * row_stride;
    for (int j = 0; j < kw; ++j) {
      const int x = j * dw;
      acc_t* d = row + static_cast<index_t>(x % sw) * phase_len + x / sw;
      const vec_t wv = vec_t{} + w[i * kw + j];
      for (index_t t = 0; t < n; t += L) vstore(d + t, vload<vec_t>(d + t) + wv * vload<vec_t>(g + t));
    }
  }
}

// grad_input for any stride (GPU form, a gather: one thread owns each input pixel, no atomics):
//   grad_in[h, w] = sum_{i, j} w[i, j] * grad_out[(h + p_h - i*d_h) / s_h, (w + p_w - j*d_w) / s_w]
// over the taps whose numerators are divisible by the stride and land inside grad_out. `gout` is a
// tile of grad_output with row stride `ld`, covering output rows [ho0, ho0 + rows) and columns
// [wo0, wo0 + cols); taps outside that window must be zero (the caller's tile holds a zero halo, so
// the window test below only guards the stride divisibility and the tile edge).
template <int K, typename acc_t>
MDC_INLINE acc_t grad_input_gather(const acc_t* __restrict__ gout, int ld, int ho0, int wo0, int rows, int cols,
                                   int sh, int sw, int dh, int dw, int ph, int pw, int k_runtime,
                                   const acc_t* __restrict__ w, int h, int wcol) {
  const int k = K > 0 ? K : k_runtime;
  acc_t sum = 0;
  MDC_PRAGMA_UNROLL
  for (int i = 0; i < k; ++i) {
    const int yn = h + ph - i * dh;
    if (yn < 0 || yn % sh != 0) continue;
    const int ho = yn / sh - ho0;
    if (ho < 0 || ho >= rows) continue;
    MDC_PRAGMA_UNROLL
    for (int j = 0; j < k; ++j) {
      const int xn = wcol + pw - j * dw;
      if (xn < 0 || xn % sw != 0) continue;
      const int wo = xn / sw - wo0;
      if (wo < 0 || wo >= cols) continue;
      sum += w[i * k + j] * gout[ho * ld + wo];
    }
  }
  return sum;
}

// grad_weight partial sums of one tap: acc[v] += g[v*VS] * s[v*VS] (V accumulators, as conv_run).
template <int V, int VS, typename acc_t, typename vec_t>
MDC_INLINE void tap_dot_run(const acc_t* __restrict__ g, const acc_t* __restrict__ s, vec_t (&acc)[V]) {
  MDC_PRAGMA_UNROLL
  for (int v = 0; v < V; ++v) acc[v] += vload<vec_t>(g + v * VS) * vload<vec_t>(s + v * VS);
}


// ================================================================================================
// GPU tiling. The CUDA kernels are thin loops around the per-thread bodies below; the CPU file can
// run the very same bodies thread by thread (HYBRIDOPS_MDC_EMULATE_CUDA=1, used by the tests), so
// the tile extents, halos, gathers and the grad_weight reduction order are checked without a GPU.
// A block is kTX x kTY threads and owns a tile_h x tile_w tile of outputs (forward, grad_weight) or
// of input pixels (grad_input gather); thread (tx, ty) handles column tx (tx < tile_w) of rows
// ty + u * kTY, u < rows_per_thread = tile_h / kTY. The tile (32 x 32 down to 8 x 8) is planned per
// launch from the shared memory the device allows (mixed_depthwise_conv2d_plan.h).
// ================================================================================================
constexpr int kTX = 32;
constexpr int kTY = 8;
constexpr int kThreads = kTX * kTY;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerThread = 4;  // the most rows per thread (tile_h <= kTileH)
constexpr int kTileW = kTX;
constexpr int kTileH = kTY * kRowsPerThread;

// The padded, phase-split shared-memory tile that feeds out_rows x out_cols outputs.
struct SmemTile {
  int rows, cols, phase_len, row_stride;
};

HOST_DEVICE_INLINE SmemTile smem_tile(int out_rows, int out_cols, int sh, int sw, int dh, int dw, int k) {
  SmemTile t;
  t.rows = (out_rows - 1) * sh + (k - 1) * dh + 1;
  t.cols = (out_cols - 1) * sw + (k - 1) * dw + 1;
  t.phase_len = (t.cols + sw - 1) / sw;
  t.row_stride = t.phase_len * sw;
  return t;
}

// Part of loading the padded input region whose top-left padded pixel is at plane coordinates
// (y0, x0) (negative: zero outside the plane): elements first, first + step, ... of the tile.
template <typename scalar_t, typename acc_t>
MDC_INLINE void load_tile_part(const scalar_t* __restrict__ plane, int64_t H, int64_t W, int64_t y0, int64_t x0,
                               const SmemTile& t, int sw, acc_t* __restrict__ tile, int first, int step) {
  const int n = t.rows * t.cols;
  for (int idx = first; idx < n; idx += step) {
    const int r = idx / t.cols;
    const int x = idx - r * t.cols;
    const int64_t y = y0 + r, xx = x0 + x;
    acc_t v = 0;
    if (y >= 0 && y < H && xx >= 0 && xx < W) v = static_cast<acc_t>(plane[y * W + xx]);
    tile[r * t.row_stride + (x % sw) * t.phase_len + x / sw] = v;
  }
}

// Part of loading the k*k taps of a channel (reversed when flip: grad_input at stride 1).
template <typename scalar_t, typename acc_t>
MDC_INLINE void load_taps_part(const scalar_t* __restrict__ wc, int k, bool flip, acc_t* __restrict__ w, int first,
                               int step) {
  const int kk = k * k;
  for (int t = first; t < kk; t += step) w[t] = static_cast<acc_t>(wc[flip ? kk - 1 - t : t]);
}

// Forward, one thread: acc[u][0] (pre-loaded with the bias) += the conv at tile output (ty + u*kTY, tx),
// u < U (the same taps in the same order for every U: the tile height never changes an output's bits).
template <int K, int U, typename acc_t>
MDC_INLINE void forward_thread(const acc_t* __restrict__ tile, const SmemTile& t, int sh, int sw, int dh, int dw,
                               int k, const acc_t* __restrict__ w, int tx, int ty, acc_t (&acc)[U][1]) {
  conv_run<K, U, 1, kTX, acc_t, int, acc_t>(tile + ty * sh * t.row_stride + tx, t.row_stride,
                                            kTY * sh * t.row_stride, t.phase_len, sw, dh, dw, k, k, w, acc);
}

// Forward outputs of thread (tx, ty) in a tile of rows_per_thread * kTY rows: acc[u] for u < rpt.
// The full 4-row tile runs the 4-row body (each tap's weight read once for 4 outputs); smaller tiles
// run the 1-row body per row.
template <int K, typename acc_t>
MDC_INLINE void forward_thread_rows(const acc_t* __restrict__ tile, const SmemTile& t, int sh, int sw, int dh,
                                    int dw, int k, const acc_t* __restrict__ w, int tx, int ty, int rpt,
                                    acc_t (&acc)[kRowsPerThread][1]) {
  if (rpt == kRowsPerThread) {
    forward_thread<K, kRowsPerThread>(tile, t, sh, sw, dh, dw, k, w, tx, ty, acc);
    return;
  }
  for (int u = 0; u < rpt; ++u) {
    acc_t one[1][1] = {{acc[u][0]}};
    forward_thread<K, 1>(tile, t, sh, sw, dh, dw, k, w, tx, ty + u * kTY, one);
    acc[u][0] = one[0][0];
  }
}

// grad_input gather: the window of grad_output read by input pixels [h0, h0 + kTileH) x [x0, x0 + kTileW).
struct GatherWindow {
  int ho_lo, wo_lo, rows, cols;
};

HOST_DEVICE_INLINE int floor_div_int(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

HOST_DEVICE_INLINE int gather_span(int pixels, int s, int d, int k) { return (pixels - 1 + (k - 1) * d) / s + 2; }

HOST_DEVICE_INLINE GatherWindow gather_window(int h0, int x0, int sh, int sw, int dh, int dw, int k, int tile_h,
                                              int tile_w) {
  // Input row h reads grad_output rows (h + p - i*d) / s, i in [0, k): the lowest is
  // floor((h0 + p - (k-1) d) / s), and the window spans at most gather_span rows.
  const int ph = static_cast<int>(same_pad(k, sh, dh)), pw = static_cast<int>(same_pad(k, sw, dw));
  GatherWindow g;
  g.ho_lo = floor_div_int(h0 + ph - (k - 1) * dh, sh);
  g.wo_lo = floor_div_int(x0 + pw - (k - 1) * dw, sw);
  g.rows = gather_span(tile_h, sh, dh, k);
  g.cols = gather_span(tile_w, sw, dw, k);
  return g;
}

// Part of loading that window of grad_output (zero outside the plane) as a rows x cols tile.
template <typename scalar_t, typename acc_t>
MDC_INLINE void load_gather_part(const scalar_t* __restrict__ gplane, int64_t Ho, int64_t Wo, const GatherWindow& gw,
                                 acc_t* __restrict__ tile, int first, int step) {
  for (int idx = first; idx < gw.rows * gw.cols; idx += step) {
    const int r = idx / gw.cols, q = idx - r * gw.cols;
    const int64_t ho = gw.ho_lo + r, wo = gw.wo_lo + q;
    tile[idx] = (ho >= 0 && ho < Ho && wo >= 0 && wo < Wo) ? static_cast<acc_t>(gplane[ho * Wo + wo]) : acc_t(0);
  }
}

// grad_weight: part of loading the tile_h x tile_w grad_output tile at (ho0, wo0) into a
// tile_h x kTileW buffer, zero outside the plane and in columns >= tile_w.
template <typename scalar_t, typename acc_t>
MDC_INLINE void load_gout_tile_part(const scalar_t* __restrict__ gplane, int64_t Ho, int64_t Wo, int ho0, int wo0,
                                    int tile_h, int tile_w, acc_t* __restrict__ gtile, int first, int step) {
  for (int idx = first; idx < tile_h * kTileW; idx += step) {
    const int r = idx / kTileW, q = idx - r * kTileW;
    const int64_t ho = ho0 + r, wo = wo0 + q;
    gtile[idx] = (q < tile_w && ho < Ho && wo < Wo) ? static_cast<acc_t>(gplane[ho * Wo + wo]) : acc_t(0);
  }
}

// grad_weight: lane `lane`'s share of tap `tap` over one tile pair: sum over tile rows r of
// gtile[r, lane] * tile[r*s_h + i*d_h, lane*s_w + j*d_w]. A warp's 32 lanes are then reduced with
// shuffles (warp_reduce_order below gives the order).
// Lanes >= tile_w (narrow tiles) contribute 0.
template <typename acc_t>
MDC_INLINE acc_t tap_lane_partial(const acc_t* __restrict__ tile, const SmemTile& t, const acc_t* __restrict__ gtile,
                                  int tile_h, int tile_w, int sh, int sw, int dh, int dw, int k, int tap, int lane) {
  if (lane >= tile_w) return acc_t(0);
  const int i = tap / k, j = tap - i * k;
  const int x = j * dw;
  const acc_t* s0 = tile + i * dh * t.row_stride + (x % sw) * t.phase_len + x / sw + lane;
  acc_t acc[1] = {0};
  for (int r = 0; r < tile_h; ++r) tap_dot_run<1, 1, acc_t, acc_t>(gtile + r * kTileW + lane, s0 + r * sh * t.row_stride, acc);
  return acc[0];
}

}  // namespace mdc
}  // namespace hybridops
