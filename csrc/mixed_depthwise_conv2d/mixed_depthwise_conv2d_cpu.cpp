// CPU implementation of mixed_depthwise_conv2d: the shared bodies (mixed_depthwise_conv2d_kernel.h)
// run over whole channel planes with at::parallel_for.
//
// One parallel pass per op (forward, grad_input, grad_weight), whatever the number of groups. A
// worker owns whole planes (forward, grad_input: one (image, channel) plane per task; grad_weight:
// one channel, all images): it copies the plane once into a zero-padded, phase-split float tile
// (converting fp16/bf16 to float on the way), then runs the unrolled body for its group's kernel
// size over that tile, V outputs at a time so the compiler vectorises across the row. No races and
// a fixed summation order, so every pass is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_driver.h"

// The inner loops are written as a * b + c; let GCC contract them to FMA where the ISA has it
// (ISO C++ modes otherwise default to -ffp-contract=off).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

namespace hybridops {
namespace mdc {
namespace {

// Outputs per vector run: 128 bytes of accumulators (32 floats / 16 doubles), enough independent
// FMA chains to hide latency with AVX2 or AVX-512 and still fit in registers.
template <typename acc_t>
constexpr int run_width() {
  return static_cast<int>(128 / sizeof(acc_t));
}

// Calls f(std::integral_constant<int, K>) with K = k for the common kernel sizes, K = 0 (generic,
// runtime loop bounds) otherwise.
template <typename F>
void with_kernel_size(int k, F&& f) {
  switch (k) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 9: f(std::integral_constant<int, 9>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

// One plane's convolution problem: input H x W, output Ho x Wo, kernel k with "same" padding.
struct PlaneConv {
  int64_t H, W, Ho, Wo;
  int sh, sw, dh, dw, k;
  int64_t ph, pw;
};

inline PlaneConv plane_conv(const Geometry& g, int k) {
  return PlaneConv{g.height, g.width, g.out_h, g.out_w, static_cast<int>(g.stride_h), static_cast<int>(g.stride_w),
                   static_cast<int>(g.dil_h), static_cast<int>(g.dil_w), k, g.pad_h(k), g.pad_w(k)};
}

// The padded, phase-split tile of one plane (see the layout note in the kernel header). It holds
// every padded row and column read by outputs [0, Ho) x [0, Wo_run), Wo_run = Wo rounded up to a
// whole run, so the last run can be computed in full without bounds checks.
struct PlaneTile {
  int64_t rows, phase_len, phases;
  int64_t row_stride() const { return phases * phase_len; }
  int64_t size() const { return rows * row_stride(); }
};

inline PlaneTile plane_tile(const PlaneConv& p, int run) {
  const int64_t wo_run = ceil_div(std::max<int64_t>(p.Wo, 1), run) * run;
  const int64_t rows = std::max<int64_t>(p.H + 2 * p.ph, (p.Ho - 1) * p.sh + 2 * p.ph + 1);
  const int64_t cols = std::max<int64_t>(p.W + 2 * p.pw, (wo_run - 1) * p.sw + 2 * p.pw + 1);
  return PlaneTile{rows, ceil_div(cols, p.sw), p.sw};
}

// Copies plane [H, W] (storage dtype) into the zeroed tile at padded offset (ph, pw).
template <typename scalar_t, typename acc_t>
void fill_tile(const PlaneConv& p, const PlaneTile& t, const scalar_t* plane, acc_t* tile) {
  std::fill(tile, tile + t.size(), acc_t(0));
  const int64_t rs = t.row_stride();
  for (int64_t h = 0; h < p.H; ++h) {
    const scalar_t* src = plane + h * p.W;
    acc_t* dst = tile + (h + p.ph) * rs;
    if (p.sw == 1) {
      acc_t* d = dst + p.pw;
      for (int64_t w = 0; w < p.W; ++w) d[w] = static_cast<acc_t>(src[w]);
    } else {
      for (int64_t w = 0; w < p.W; ++w) {
        const int64_t x = w + p.pw;
        dst[(x % p.sw) * t.phase_len + x / p.sw] = static_cast<acc_t>(src[w]);
      }
    }
  }
}

// out[Ho, Wo] = conv(tile, w) + bias: V outputs per run, the body unrolled for K.
template <int K, int V, typename scalar_t, typename acc_t>
void conv_plane(const PlaneConv& p, const PlaneTile& t, const acc_t* tile, const acc_t* w, acc_t bias,
                scalar_t* out) {
  const int64_t rs = t.row_stride();
  for (int64_t ho = 0; ho < p.Ho; ++ho) {
    const acc_t* row = tile + ho * p.sh * rs;
    scalar_t* o = out + ho * p.Wo;
    for (int64_t wo0 = 0; wo0 < p.Wo; wo0 += V) {
      acc_t acc[V];
      for (int v = 0; v < V; ++v) acc[v] = bias;
      conv_run<K, V, 1, acc_t, int64_t>(row + wo0, rs, t.phase_len, p.sw, p.dh, p.dw, p.k, w, acc);
      const int64_t n = std::min<int64_t>(V, p.Wo - wo0);
      for (int64_t v = 0; v < n; ++v) o[wo0 + v] = static_cast<scalar_t>(acc[v]);
    }
  }
}

// Scratch buffers owned by one worker, grown as needed.
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> tile, tile2, w;
  acc_t* get(std::vector<acc_t>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    return v.data();
  }
};

// Weights of channel c (k*k taps) in the accumulation type, optionally flipped (for grad_input).
template <typename scalar_t, typename acc_t>
void load_weights(const scalar_t* wc, int k, bool flip, acc_t* out) {
  const int kk = k * k;
  for (int t = 0; t < kk; ++t) out[t] = static_cast<acc_t>(wc[flip ? kk - 1 - t : t]);
}

// ---------------------------------------------------------------------------------------------
at::Tensor forward_cpu(const at::Tensor& input_, at::TensorList weights_, const c10::optional<at::Tensor>& bias_,
                       at::IntArrayRef stride, at::IntArrayRef dilation) {
  const Geometry g = make_geometry(input_, weights_, stride, dilation);
  check_bias(bias_, input_);
  const at::Tensor input = input_.contiguous();
  const std::vector<at::Tensor> weights = contiguous_all(weights_);
  const bool use_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = use_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, input.options());
  if (out.numel() == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int V = run_width<acc_t>();
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* b = use_bias ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    GroupPointers<const scalar_t> wp{};
    for (int i = 0; i < g.num_groups; ++i) wp.ptr[i] = weights[i].data_ptr<scalar_t>();
    const int64_t HW = g.height * g.width, P = g.out_h * g.out_w;
    at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
      Scratch<acc_t> s;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t c = task % g.channels;
        const int gi = g.group_of(c);
        const int k = g.kernel[gi];
        const PlaneConv p = plane_conv(g, k);
        const PlaneTile t = plane_tile(p, V);
        acc_t* tile = s.get(s.tile, t.size());
        acc_t* w = s.get(s.w, k * k);
        load_weights(wp.ptr[gi] + (c - g.group_begin[gi]) * k * k, k, false, w);
        fill_tile(p, t, in + task * HW, tile);
        const acc_t bv = b ? static_cast<acc_t>(b[c]) : acc_t(0);
        with_kernel_size(k, [&](auto K) { conv_plane<decltype(K)::value, V>(p, t, tile, w, bv, o + task * P); });
      }
    });
  });
  return out;
}

// grad_input of one plane. Stride 1: the forward body on grad_output with the flipped kernel (the
// "same" padding makes the full correlation line up). Stride > 1: the adjoint scatter into a padded
// tile of grad_input, then the interior is copied out.
template <typename scalar_t, typename acc_t>
void grad_input_plane(const Geometry& g, int k, const scalar_t* go, const acc_t* w_flipped, const acc_t* w,
                      scalar_t* gi, Scratch<acc_t>& s) {
  constexpr int V = run_width<acc_t>();
  const PlaneConv p = plane_conv(g, k);
  if (p.sh == 1 && p.sw == 1) {
    // Input of this convolution is grad_output (Ho x Wo == H x W), output is grad_input.
    const PlaneTile t = plane_tile(p, V);
    acc_t* tile = s.get(s.tile, t.size());
    PlaneConv q = p;
    q.H = p.Ho;
    q.W = p.Wo;
    q.Ho = p.H;
    q.Wo = p.W;
    fill_tile(q, t, go, tile);
    with_kernel_size(k, [&](auto K) { conv_plane<decltype(K)::value, V>(q, t, tile, w_flipped, acc_t(0), gi); });
    return;
  }
  const PlaneTile t = plane_tile(p, 1);
  acc_t* tile = s.get(s.tile, t.size());
  std::fill(tile, tile + t.size(), acc_t(0));
  acc_t* grow = s.get(s.tile2, p.Wo);
  const int64_t rs = t.row_stride();
  with_kernel_size(k, [&](auto K) {
    for (int64_t ho = 0; ho < p.Ho; ++ho) {
      for (int64_t wo = 0; wo < p.Wo; ++wo) grow[wo] = static_cast<acc_t>(go[ho * p.Wo + wo]);
      scatter_row<decltype(K)::value, acc_t, int64_t>(tile + ho * p.sh * rs, rs, t.phase_len, p.sw, p.dh, p.dw, k, w,
                                                      grow, p.Wo);
    }
  });
  for (int64_t h = 0; h < p.H; ++h) {
    const acc_t* src = tile + (h + p.ph) * rs;
    scalar_t* dst = gi + h * p.W;
    for (int64_t x = 0; x < p.W; ++x) {
      const int64_t xp = x + p.pw;
      dst[x] = static_cast<scalar_t>(src[(xp % p.sw) * t.phase_len + xp / p.sw]);
    }
  }
}

// grad_weight of one channel over all images: gw[i, j] = sum_{n, ho, wo} g[n, ho, wo] * tile_n[ho*s + i*d, ...].
template <int K, int V, typename acc_t>
void grad_weight_taps(const PlaneConv& p, const PlaneTile& t, const acc_t* tile, const acc_t* gtile, int64_t gld,
                      acc_t* gw) {
  const int k = K > 0 ? K : p.k;
  const int64_t rs = t.row_stride();
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < k; ++j) {
      const int x = j * p.dw;
      const acc_t* s0 = tile + static_cast<int64_t>(i * p.dh) * rs + (x % p.sw) * t.phase_len + x / p.sw;
      acc_t acc[V];
      for (int v = 0; v < V; ++v) acc[v] = 0;
      for (int64_t ho = 0; ho < p.Ho; ++ho) {
        const acc_t* srow = s0 + ho * p.sh * rs;
        const acc_t* grow = gtile + ho * gld;
        for (int64_t wo0 = 0; wo0 < gld; wo0 += V) tap_dot_run<V, 1>(grow + wo0, srow + wo0, acc);
      }
      acc_t sum = 0;
      for (int v = 0; v < V; ++v) sum += acc[v];
      gw[i * k + j] += sum;
    }
  }
}

std::tuple<at::Tensor, std::vector<at::Tensor>> backward_cpu(const at::Tensor& grad_out_, const at::Tensor& input_,
                                                             at::TensorList weights_, at::IntArrayRef stride,
                                                             at::IntArrayRef dilation,
                                                             std::array<bool, 2> output_mask) {
  const Geometry g = make_geometry(input_, weights_, stride, dilation);
  check_grad_output(grad_out_, g, input_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous();
  const std::vector<at::Tensor> weights = contiguous_all(weights_);
  at::Tensor grad_input = output_mask[0] ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  std::vector<at::Tensor> grad_weights;
  if (output_mask[1]) {
    for (const auto& w : weights) grad_weights.push_back(at::empty(w.sizes(), w.options()));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int V = run_width<acc_t>();
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* go = grad_out.data_ptr<scalar_t>();
    GroupPointers<const scalar_t> wp{};
    for (int i = 0; i < g.num_groups; ++i) wp.ptr[i] = weights[i].data_ptr<scalar_t>();
    const int64_t HW = g.height * g.width, P = g.out_h * g.out_w;

    if (output_mask[0] && grad_input.numel() > 0) {
      scalar_t* gi = grad_input.data_ptr<scalar_t>();
      at::parallel_for(0, g.batch * g.channels, 1, [&](int64_t begin, int64_t end) {
        Scratch<acc_t> s;
        std::vector<acc_t> wflip;
        for (int64_t task = begin; task < end; ++task) {
          const int64_t c = task % g.channels;
          const int gr = g.group_of(c);
          const int k = g.kernel[gr];
          const scalar_t* wc = wp.ptr[gr] + (c - g.group_begin[gr]) * k * k;
          acc_t* w = s.get(s.w, k * k);
          if (static_cast<int>(wflip.size()) < k * k) wflip.resize(k * k);
          load_weights(wc, k, false, w);
          load_weights(wc, k, true, wflip.data());
          grad_input_plane<scalar_t, acc_t>(g, k, go + task * P, wflip.data(), w, gi + task * HW, s);
        }
      });
    }

    if (output_mask[1]) {
      GroupPointers<scalar_t> gwp{};
      for (int i = 0; i < g.num_groups; ++i) gwp.ptr[i] = grad_weights[i].data_ptr<scalar_t>();
      at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
        Scratch<acc_t> s;
        for (int64_t c = begin; c < end; ++c) {
          const int gr = g.group_of(c);
          const int k = g.kernel[gr];
          const PlaneConv p = plane_conv(g, k);
          const PlaneTile t = plane_tile(p, V);
          const int64_t gld = ceil_div(std::max<int64_t>(p.Wo, 1), V) * V;
          acc_t* gw = s.get(s.w, k * k);
          std::fill(gw, gw + k * k, acc_t(0));
          for (int64_t n = 0; n < g.batch && P > 0; ++n) {
            acc_t* tile = s.get(s.tile, t.size());
            fill_tile(p, t, in + (n * g.channels + c) * HW, tile);
            acc_t* gtile = s.get(s.tile2, p.Ho * gld);
            const scalar_t* gplane = go + (n * g.channels + c) * P;
            for (int64_t ho = 0; ho < p.Ho; ++ho) {
              acc_t* dst = gtile + ho * gld;
              for (int64_t wo = 0; wo < p.Wo; ++wo) dst[wo] = static_cast<acc_t>(gplane[ho * p.Wo + wo]);
              std::fill(dst + p.Wo, dst + gld, acc_t(0));
            }
            with_kernel_size(k, [&](auto K) { grad_weight_taps<decltype(K)::value, V>(p, t, tile, gtile, gld, gw); });
          }
          scalar_t* out = gwp.ptr[gr] + (c - g.group_begin[gr]) * k * k;
          for (int i = 0; i < k * k; ++i) out[i] = static_cast<scalar_t>(gw[i]);
        }
      });
    }
  });
  return {grad_input, grad_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(hybridops, CPU, m) {
  m.impl("mixed_depthwise_conv2d", &forward_cpu);
  m.impl("mixed_depthwise_conv2d_backward", &backward_cpu);
}

}  // namespace mdc
}  // namespace hybridops
