// CPU kernels of mixed_depthwise_conv2d for NCHW tensors: the per-task bodies over whole channel
// planes, templated on the SIMD policy (mixed_depthwise_conv2d_cpu_simd.h). Instantiated once per
// ISA by mixed_depthwise_conv2d_cpu_isa_{base,avx2,avx512}.cpp; the host side is
// mixed_depthwise_conv2d_cpu.cpp.
//
// One parallel pass per op (forward, grad_input, grad_weight), whatever the number of groups. A
// worker owns whole planes (forward, grad_input: one (image, channel) plane per task; grad_weight:
// one channel over all images): it copies the plane once into a zero-padded, phase-split float
// tile (converting fp16/bf16 to float on the way), then runs the body unrolled for its group's
// kernel size over that tile. No races and a fixed summation order: every pass is deterministic.
//
// Vectorisation: the bodies take a SIMD vector type (GCC vector extensions) for their
// accumulators, so each accumulator holds several consecutive outputs of a row. The task loops
// are compiled three times -- baseline x86-64 (SSE2), AVX2+FMA and AVX-512 -- and the best one the
// CPU supports is picked at run time (HYBRIDOPS_CPU_ISA=base|avx2|avx512 caps it, for testing).
// GCC does not vectorise these loops reliably by itself (the stride is a run-time value), and a
// 64-byte vector type is slow under plain SSE2, hence the explicit per-ISA entry points.
#pragma once

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_simd.h"  // first: its -Wpsabi pragma
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_kernel.h"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace hybridops {
namespace mdc {
namespace nchw {


// The taps of one dimension that can read the image: tap i reads input positions
// o * s - p + i * d for outputs o in [0, n_out); taps [lo, hi) are those whose span of positions
// overlaps [0, n). The others only ever read the zero padding, so they add nothing to the output
// and get a zero gradient: the tile need not hold their padding (with a large dilation that padding
// is far larger than the image: dilation 65,536 on a 4x4 image would need a 131k x 131k tile).
struct TapWindow {
  int lo, hi;
};

inline TapWindow tap_window(int64_t n, int64_t n_out, int64_t s, int64_t d, int64_t p, int k) {
  const int64_t last = (n_out - 1) * s;  // span of one tap's positions
  const int64_t lo = std::max<int64_t>(0, p - last > 0 ? ceil_div(p - last, d) : 0);
  const int64_t hi = std::min<int64_t>(k, (n - 1 + p) / d + 1);
  return lo < hi ? TapWindow{static_cast<int>(lo), static_cast<int>(hi)} : TapWindow{0, 0};
}

// One plane's convolution problem: input H x W, output Ho x Wo, kernel k, timm's padding; only the
// taps [i0, i0 + kh) x [j0, j0 + kw) run (see TapWindow; kh == 0 or kw == 0: no tap reaches the
// image). The plane's tile (PlaneTile) starts at padded row R0 and padded column C0:
//   ph, pw       : tile coordinates of input pixel (0, 0) (the tile's zero halo on the top/left)
//   r_off, c_off : tile row, and phase-split column index, of the first run tap at output (0, 0);
//                  C0 is chosen so that this column lies in phase 0 (c_off whole columns per phase).
struct PlaneConv {
  int64_t H, W, Ho, Wo;
  int sh, sw, dh, dw, k;
  int64_t ph, pw;
  int i0, kh, j0, kw;
  int64_t r_off, c_off;
  bool full() const { return kh == k && kw == k; }
};

inline PlaneConv plane_conv(const Geometry& g, int k) {
  PlaneConv p{g.height, g.width, g.out_h, g.out_w, static_cast<int>(g.stride_h), static_cast<int>(g.stride_w),
              static_cast<int>(g.dil_h), static_cast<int>(g.dil_w), k, 0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t pad_h = g.pad_h(k), pad_w = g.pad_w(k);
  const TapWindow ti = tap_window(p.H, p.Ho, p.sh, p.dh, pad_h, k);
  const TapWindow tj = tap_window(p.W, p.Wo, p.sw, p.dw, pad_w, k);
  p.i0 = ti.lo;
  p.kh = ti.hi - ti.lo;
  p.j0 = tj.lo;
  p.kw = tj.hi - tj.lo;
  if (p.kh == 0 || p.kw == 0) p.kh = p.kw = 0;
  // Rows: the tile starts at the first run tap's row or at the image, whichever comes first.
  const int64_t r0 = p.kh > 0 ? int64_t(p.i0) * p.dh : pad_h;
  const int64_t R0 = std::min(r0, pad_h);
  p.ph = pad_h - R0;
  p.r_off = r0 - R0;
  // Columns: likewise, then moved left to a whole number of phase rows before the first tap.
  const int64_t c0 = p.kw > 0 ? int64_t(p.j0) * p.dw : pad_w;
  const int64_t C0 = c0 - p.sw * ceil_div(c0 - std::min(c0, pad_w), p.sw);
  p.pw = pad_w - C0;
  p.c_off = (c0 - C0) / p.sw;
  return p;
}

// The padded, phase-split tile of one plane (see the layout note in the kernel header). It holds
// the input plane at (ph, pw) and every tile row and column read (or written) by outputs
// [0, Ho_run) x [0, Wo_run), Ho_run and Wo_run = Ho and Wo rounded up to whole runs (kMaxRows rows,
// `run` columns). At most about (2 Ho s_h + 2 H) x (2 Wo s_w + 2 W) whatever the dilation.
struct PlaneTile {
  int64_t rows, phase_len, phases;
  int64_t row_stride() const { return phases * phase_len; }
  int64_t size() const { return rows * row_stride(); }
};

inline PlaneTile plane_tile(const PlaneConv& p, int64_t run) {
  const int64_t wo_run = ceil_div(std::max<int64_t>(p.Wo, 1), run) * run;
  const int64_t ho_run = ceil_div(std::max<int64_t>(p.Ho, 1), kMaxRows) * kMaxRows;
  int64_t rows = p.ph + p.H, cols = p.pw + p.W;
  if (p.kh > 0) {
    rows = std::max(rows, p.r_off + (ho_run - 1) * p.sh + int64_t(p.kh - 1) * p.dh + 1);
    cols = std::max(cols, p.c_off * p.sw + (wo_run - 1) * p.sw + int64_t(p.kw - 1) * p.dw + 1);
  }
  return PlaneTile{rows, ceil_div(cols, p.sw), p.sw};
}

// The first tile element read by the run taps of output (0, 0) (row r_off, phase 0, index c_off).
template <typename acc_t>
MDC_INLINE acc_t* tap_origin(const PlaneConv& p, const PlaneTile& t, acc_t* tile) {
  return tile + p.r_off * t.row_stride() + p.c_off;
}

template <typename T>
MDC_INLINE T* grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  return v.data();
}

// d[m] = src[m * S] for m in [0, n), S a compile-time stride (vectorisable) or run-time (S == 0).
template <int S, typename scalar_t, typename acc_t>
MDC_INLINE void copy_strided(const scalar_t* __restrict__ src, acc_t* __restrict__ d, int64_t n, int64_t s_rt) {
  const int64_t s = S > 0 ? S : s_rt;
  for (int64_t m = 0; m < n; ++m) d[m] = static_cast<acc_t>(src[m * s]);
}

// Copies plane [H, W] (storage dtype) into the tile at padded offset (ph, pw) and zeroes the halo
// (only the halo: the interior is written once).
template <typename scalar_t, typename acc_t>
MDC_INLINE void fill_tile(const PlaneConv& p, const PlaneTile& t, const scalar_t* plane, acc_t* tile) {
  const int64_t rs = t.row_stride();
  for (int64_t r = 0; r < t.rows; ++r) {
    acc_t* dst = tile + r * rs;
    const int64_t h = r - p.ph;
    if (h < 0 || h >= p.H) {
      std::fill(dst, dst + rs, acc_t(0));
      continue;
    }
    const scalar_t* src = plane + h * p.W;
    // Phase q holds padded columns q, q + s, q + 2s, ...: interior m in [m0, m1) is input column
    // q + m * s - pw.
    for (int64_t q = 0; q < p.sw; ++q) {
      acc_t* d = dst + q * t.phase_len;
      const int64_t m0 = q >= p.pw ? 0 : ceil_div(p.pw - q, p.sw);
      const int64_t m1 = std::max(m0, std::min(t.phase_len, ceil_div(p.W + p.pw - q, p.sw)));
      std::fill(d, d + m0, acc_t(0));
      const scalar_t* s0 = src + (q + m0 * p.sw - p.pw);
      if (p.sw == 1) {
        copy_strided<1>(s0, d + m0, m1 - m0, 1);
      } else if (p.sw == 2) {
        copy_strided<2>(s0, d + m0, m1 - m0, 2);
      } else {
        copy_strided<0>(s0, d + m0, m1 - m0, p.sw);
      }
      std::fill(d + m1, d + t.phase_len, acc_t(0));
    }
  }
}

// Writes n accumulators (row buffer) to the output in its storage dtype.
template <typename scalar_t, typename acc_t>
MDC_INLINE void store_row(const acc_t* src, scalar_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// The run taps [i0, i0 + kh) x [j0, j0 + kw) of a channel's k x k kernel (flipped first if asked),
// row-major kh x kw.
template <typename scalar_t, typename acc_t>
MDC_INLINE void load_weights(const scalar_t* wc, const PlaneConv& p, bool flip, acc_t* out) {
  const int kk = p.k * p.k;
  for (int i = 0; i < p.kh; ++i) {
    for (int j = 0; j < p.kw; ++j) {
      const int t = (p.i0 + i) * p.k + p.j0 + j;
      out[i * p.kw + j] = static_cast<acc_t>(wc[flip ? kk - 1 - t : t]);
    }
  }
}

// Runs STMT with `constexpr int K_` for the plane's kernel: the unrolled bodies when every tap
// runs, the run-time kh x kw loops (K_ = 0) for a sub-window.
#define MDC_DISPATCH_PLANE(p, ...)   \
  if ((p).full()) {                  \
    MDC_DISPATCH_K((p).k, __VA_ARGS__); \
  } else {                           \
    constexpr int K_ = 0;            \
    __VA_ARGS__;                     \
  }

// out[Ho, Wo] = conv(tile, w) + bias: U rows x R outputs per conv_run call, through the row
// buffer orow [U, Wo_run] (accumulation type), then converted to the storage dtype.
template <int K, typename Isa, typename scalar_t, typename acc_t>
MDC_INLINE void conv_plane(const PlaneConv& p, const PlaneTile& t, const acc_t* tile, const acc_t* w, acc_t bias,
                           acc_t* orow, scalar_t* out) {
  using S = Simd<Isa, acc_t>;
  using vec = typename S::vec;
  const int64_t rs = t.row_stride();
  const int64_t wo_run = ceil_div(p.Wo, S::R) * S::R;
  const acc_t* origin = tap_origin(p, t, tile);
  for (int64_t ho0 = 0; ho0 < p.Ho; ho0 += S::U) {
    const acc_t* row = origin + ho0 * p.sh * rs;
    for (int64_t wo0 = 0; wo0 < p.Wo; wo0 += S::R) {
      vec acc[S::U][S::V];
      for (int u = 0; u < S::U; ++u) {
        for (int v = 0; v < S::V; ++v) acc[u][v] = vec{} + bias;
      }
      conv_run<K, S::U, S::V, S::L, acc_t, int64_t, vec>(row + wo0, rs, p.sh * rs, t.phase_len, p.sw, p.dh, p.dw,
                                                          p.kh, p.kw, w, acc);
      for (int u = 0; u < S::U; ++u) {
        for (int v = 0; v < S::V; ++v) vstore(orow + u * wo_run + wo0 + v * S::L, acc[u][v]);
      }
    }
    const int64_t rows = std::min<int64_t>(S::U, p.Ho - ho0);
    for (int64_t u = 0; u < rows; ++u) store_row(orow + u * wo_run, out + (ho0 + u) * p.Wo, p.Wo);
  }
}

template <typename scalar_t>
struct Args {
  using storage_t = scalar_t;
  Geometry g;
  const scalar_t* input;
  const scalar_t* grad_out;
  const scalar_t* bias;
  GroupPointers<const scalar_t> w;
  GroupPointers<scalar_t> grad_w;
  scalar_t* out;  // forward output or grad_input
};

// ---- forward: tasks are (image, channel) planes ------------------------------------------------
template <typename Isa, typename scalar_t>
MDC_INLINE void forward_tasks(const Args<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t R = run_width<acc_t>();
  const Geometry& g = a.g;
  const int64_t HW = g.height * g.width, P = g.out_h * g.out_w;
  std::vector<acc_t> tile_buf, w_buf, row_buf;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t c = task % g.channels;
    const int gi = g.group_of(c);
    const int k = g.kernel[gi];
    const PlaneConv p = plane_conv(g, k);
    const PlaneTile t = plane_tile(p, R);
    acc_t* tile = grow(tile_buf, t.size());
    acc_t* w = grow(w_buf, k * k);
    acc_t* orow = grow(row_buf, kMaxRows * ceil_div(p.Wo, R) * R);
    load_weights(a.w.ptr[gi] + (c - g.group_begin[gi]) * k * k, p, false, w);
    fill_tile(p, t, a.input + task * HW, tile);
    const acc_t bias = a.bias ? static_cast<acc_t>(a.bias[c]) : acc_t(0);
    MDC_DISPATCH_PLANE(p, conv_plane<K_, Isa>(p, t, tile, w, bias, orow, a.out + task * P));
  }
}

// ---- grad_input: tasks are (image, channel) planes ---------------------------------------------
// Stride 1: the forward body on grad_output with the flipped kernel (the "same" padding makes the
// full correlation line up). Stride > 1: the adjoint scatter into a padded tile of grad_input, then
// its interior is copied out.
template <typename Isa, typename scalar_t>
MDC_INLINE void grad_input_tasks(const Args<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Simd<Isa, acc_t>;
  constexpr int64_t R = run_width<acc_t>();
  const Geometry& g = a.g;
  const int64_t HW = g.height * g.width, P = g.out_h * g.out_w;
  std::vector<acc_t> tile_buf, w_buf, row_buf;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t c = task % g.channels;
    const int gi = g.group_of(c);
    const int k = g.kernel[gi];
    const scalar_t* go = a.grad_out + task * P;
    scalar_t* gin = a.out + task * HW;
    const PlaneConv p = plane_conv(g, k);
    acc_t* w = grow(w_buf, k * k);
    const scalar_t* wc = a.w.ptr[gi] + (c - g.group_begin[gi]) * k * k;
    if (p.sh == 1 && p.sw == 1) {
      // This convolution's input is grad_output (Ho x Wo == H x W) and its output grad_input.
      const PlaneTile t = plane_tile(p, R);
      acc_t* tile = grow(tile_buf, t.size());
      acc_t* orow = grow(row_buf, kMaxRows * ceil_div(p.W, R) * R);
      load_weights(wc, p, true, w);  // the window is symmetric at stride 1: flip, then window
      fill_tile(p, t, go, tile);
      MDC_DISPATCH_PLANE(p, conv_plane<K_, Isa>(p, t, tile, w, acc_t(0), orow, gin));
      continue;
    }
    load_weights(wc, p, false, w);
    const PlaneTile t = plane_tile(p, R);
    const int64_t wo_run = ceil_div(std::max<int64_t>(p.Wo, 1), R) * R;
    acc_t* tile = grow(tile_buf, t.size());
    acc_t* grow_row = grow(row_buf, wo_run);
    std::fill(tile, tile + t.size(), acc_t(0));
    std::fill(grow_row, grow_row + wo_run, acc_t(0));
    const int64_t rs = t.row_stride();
    for (int64_t ho = 0; ho < p.Ho; ++ho) {
      for (int64_t wo = 0; wo < p.Wo; ++wo) grow_row[wo] = static_cast<acc_t>(go[ho * p.Wo + wo]);
      acc_t* dst = tap_origin(p, t, tile) + ho * p.sh * rs;
      MDC_DISPATCH_PLANE(p, scatter_row<K_, acc_t, int64_t, typename S::vec>(dst, rs, t.phase_len, p.sw, p.dh, p.dw,
                                                                              p.kh, p.kw, w, grow_row, p.Wo));
    }
    for (int64_t h = 0; h < p.H; ++h) {
      const acc_t* src = tile + (h + p.ph) * rs;
      scalar_t* dst = gin + h * p.W;
      for (int64_t q = 0; q < p.sw; ++q) {  // the interior of each phase, as in fill_tile
        const int64_t m0 = q >= p.pw ? 0 : ceil_div(p.pw - q, p.sw);
        const int64_t m1 = std::max(m0, std::min(t.phase_len, ceil_div(p.W + p.pw - q, p.sw)));
        const acc_t* sq = src + q * t.phase_len;
        scalar_t* d0 = dst + (q + m0 * p.sw - p.pw);
        for (int64_t m = m0; m < m1; ++m) d0[(m - m0) * p.sw] = static_cast<scalar_t>(sq[m]);
      }
    }
  }
}

// ---- grad_weight: tasks are channels, each summing over all images -----------------------------
//   gw[i, j] += sum_{ho, wo} g[ho, wo] * tile[ho*s_h + i*d_h, wo*s_w + j*d_w]
// (only the run taps: the others read zeros only, their gradient stays 0).
template <int K, typename Isa, typename acc_t>
MDC_INLINE void grad_weight_taps(const PlaneConv& p, const PlaneTile& t, const acc_t* tile, const acc_t* gtile,
                                 int64_t gld, acc_t* gw) {
  using S = Simd<Isa, acc_t>;
  using vec = typename S::vec;
  const int kh = K > 0 ? K : p.kh, kw = K > 0 ? K : p.kw;
  const int64_t rs = t.row_stride();
  const acc_t* origin = tap_origin(p, t, tile);
  for (int i = 0; i < kh; ++i) {
    for (int j = 0; j < kw; ++j) {
      const int x = j * p.dw;
      const acc_t* s0 = origin + static_cast<int64_t>(i * p.dh) * rs + (x % p.sw) * t.phase_len + x / p.sw;
      vec acc[S::V];
      for (int v = 0; v < S::V; ++v) acc[v] = vec{};
      for (int64_t ho = 0; ho < p.Ho; ++ho) {
        const acc_t* srow = s0 + ho * p.sh * rs;
        const acc_t* grow_ = gtile + ho * gld;
        for (int64_t wo0 = 0; wo0 < gld; wo0 += S::R) tap_dot_run<S::V, S::L>(grow_ + wo0, srow + wo0, acc);
      }
      acc_t lanes[S::R];
      std::memcpy(lanes, acc, sizeof(lanes));
      acc_t sum = 0;
      for (int v = 0; v < S::R; ++v) sum += lanes[v];
      gw[(p.i0 + i) * p.k + p.j0 + j] += sum;
    }
  }
}

template <typename Isa, typename scalar_t>
MDC_INLINE void grad_weight_tasks(const Args<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t R = run_width<acc_t>();
  const Geometry& g = a.g;
  const int64_t HW = g.height * g.width, P = g.out_h * g.out_w;
  std::vector<acc_t> tile_buf, gtile_buf, w_buf;
  for (int64_t c = begin; c < end; ++c) {
    const int gi = g.group_of(c);
    const int k = g.kernel[gi];
    const PlaneConv p = plane_conv(g, k);
    const PlaneTile t = plane_tile(p, R);
    const int64_t gld = ceil_div(std::max<int64_t>(p.Wo, 1), R) * R;
    acc_t* gw = grow(w_buf, k * k);
    std::fill(gw, gw + k * k, acc_t(0));
    for (int64_t n = 0; n < g.batch && P > 0; ++n) {
      acc_t* tile = grow(tile_buf, t.size());
      fill_tile(p, t, a.input + (n * g.channels + c) * HW, tile);
      acc_t* gtile = grow(gtile_buf, p.Ho * gld);
      const scalar_t* gplane = a.grad_out + (n * g.channels + c) * P;
      for (int64_t ho = 0; ho < p.Ho; ++ho) {
        acc_t* dst = gtile + ho * gld;
        for (int64_t wo = 0; wo < p.Wo; ++wo) dst[wo] = static_cast<acc_t>(gplane[ho * p.Wo + wo]);
        std::fill(dst + p.Wo, dst + gld, acc_t(0));
      }
      MDC_DISPATCH_PLANE(p, grad_weight_taps<K_, Isa>(p, t, tile, gtile, gld, gw));
    }
    scalar_t* out = a.grad_w.ptr[gi] + (c - g.group_begin[gi]) * k * k;
    for (int i = 0; i < k * k; ++i) out[i] = static_cast<scalar_t>(gw[i]);
  }
}

// ---- the passes (one entry point per ISA runs any of them: mixed_depthwise_conv2d_cpu_isa.h) -----
enum class Pass { kForward, kGradInput, kGradWeight };

template <typename Isa, typename scalar_t>
MDC_INLINE void run_tasks(Pass pass, const Args<scalar_t>& a, int64_t begin, int64_t end) {
  switch (pass) {
    case Pass::kForward: forward_tasks<Isa>(a, begin, end); break;
    case Pass::kGradInput: grad_input_tasks<Isa>(a, begin, end); break;
    case Pass::kGradWeight: grad_weight_tasks<Isa>(a, begin, end); break;
  }
}

}  // namespace nchw
}  // namespace mdc
}  // namespace hybridops
