// Host-side algorithm of deform_conv2d, shared by the CPU and CUDA implementations.
//
// Forward, per block of images: sample the deformed columns (im2col_item, one pass over the
// input, bilinear weights computed once per tap and reused across the channels of an offset
// group), then one batched GEMM per weight group writes the output (bias fused into the GEMM).
// Backward, per block: grad_columns = W^T @ grad_out (GEMM), offset/mask gradients (a channel
// reduction per tap, no atomics), grad_input (scatter), columns again and grad_weight (GEMM).
// Blocks are sized so the columns buffer stays under a fixed budget at any batch size.
//
// `Backend` provides the three sampling kernels for its device:
//   Backend::im2col(geometry, input, offset, mask, columns)
//   Backend::offset_mask_grad(geometry, input, offset, mask, grad_columns, grad_offset, grad_mask)
//   Backend::col2im(geometry, offset, mask, grad_columns, grad_input)   // grad_input in opmath dtype
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "common/memory_format.h"
#include "deform_conv2d/deform_conv2d_kernel.h"

namespace hybridops {
namespace dcn {

// Columns buffer budget per block (elements of the input dtype), and the number of GEMM columns
// we aim for per block so small feature maps still give the GEMM enough work.
constexpr int64_t kColumnsBudgetBytes = int64_t(256) << 20;
constexpr int64_t kTargetGemmColumns = 4096;

inline void check_same(const at::Tensor& a, const char* name, const at::Tensor& input) {
  TORCH_CHECK(a.device() == input.device(), "hybridops.deform_conv2d: ", name, " is on ", a.device(),
              " but input is on ", input.device());
  TORCH_CHECK(a.scalar_type() == input.scalar_type(), "hybridops.deform_conv2d: ", name, " has dtype ",
              a.scalar_type(), " but input has dtype ", input.scalar_type());
}

// Validates the arguments (the Python wrapper checks the same things first with friendlier text;
// these checks keep direct torch.ops calls safe) and returns the geometry of the whole batch.
inline Geometry make_geometry(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& mask, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.dim() == 4, "hybridops.deform_conv2d: input must be 4-D [N, C, H, W], got ", input.dim(), "-D");
  TORCH_CHECK(weight.dim() == 4, "hybridops.deform_conv2d: weight must be 4-D [C_out, C_in/groups, kH, kW], got ",
              weight.dim(), "-D");
  TORCH_CHECK(offset.dim() == 4, "hybridops.deform_conv2d: offset must be 4-D, got ", offset.dim(), "-D");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "hybridops.deform_conv2d: stride, padding and dilation must have 2 values each");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), "hybridops.deform_conv2d: input must be floating point, got ",
              input.scalar_type());
  Geometry g{};
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];
  TORCH_CHECK(g.kernel_h > 0 && g.kernel_w > 0, "hybridops.deform_conv2d: weight has an empty kernel ", g.kernel_h,
              "x", g.kernel_w);
  TORCH_CHECK(g.stride_h > 0 && g.stride_w > 0, "hybridops.deform_conv2d: stride must be positive, got (",
              g.stride_h, ", ", g.stride_w, ")");
  TORCH_CHECK(g.dil_h > 0 && g.dil_w > 0, "hybridops.deform_conv2d: dilation must be positive, got (", g.dil_h, ", ",
              g.dil_w, ")");
  TORCH_CHECK(g.pad_h >= 0 && g.pad_w >= 0, "hybridops.deform_conv2d: padding must be non-negative, got (", g.pad_h,
              ", ", g.pad_w, ")");
  // Bounded so the int64 size arithmetic below (H + 2 * pad, dil * (k - 1), ...) cannot overflow.
  const int64_t kMaxArg = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(g.stride_h <= kMaxArg && g.stride_w <= kMaxArg, "hybridops.deform_conv2d: stride must be at most ",
              kMaxArg, ", got (", g.stride_h, ", ", g.stride_w, ")");
  TORCH_CHECK(g.pad_h <= kMaxArg && g.pad_w <= kMaxArg, "hybridops.deform_conv2d: padding must be at most ", kMaxArg,
              ", got (", g.pad_h, ", ", g.pad_w, ")");
  TORCH_CHECK(g.dil_h <= kMaxArg && g.dil_w <= kMaxArg, "hybridops.deform_conv2d: dilation must be at most ",
              kMaxArg, ", got (", g.dil_h, ", ", g.dil_w, ")");
  TORCH_CHECK(g.channels > 0, "hybridops.deform_conv2d: input must have at least one channel, got shape ",
              input.sizes());
  TORCH_CHECK(weight.size(1) > 0 && g.channels % weight.size(1) == 0,
              "hybridops.deform_conv2d: input channels (", g.channels, ") must be divisible by weight.shape[1] (",
              weight.size(1), ")");
  const int64_t groups = g.channels / weight.size(1);
  TORCH_CHECK(weight.size(0) % groups == 0, "hybridops.deform_conv2d: weight.shape[0] (", weight.size(0),
              ") must be divisible by groups (", groups, ")");
  g.out_h = (g.height + 2 * g.pad_h - (g.dil_h * (g.kernel_h - 1) + 1)) / g.stride_h + 1;
  g.out_w = (g.width + 2 * g.pad_w - (g.dil_w * (g.kernel_w - 1) + 1)) / g.stride_w + 1;
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "hybridops.deform_conv2d: output size would be ", g.out_h, "x", g.out_w,
              " for input ", g.height, "x", g.width);
  const int64_t K = g.taps();
  TORCH_CHECK(offset.size(1) > 0 && offset.size(1) % (2 * K) == 0,
              "hybridops.deform_conv2d: offset.shape[1] must be a positive multiple of 2*kH*kW = ", 2 * K, ", got ",
              offset.size(1));
  g.offset_groups = offset.size(1) / (2 * K);
  TORCH_CHECK(g.channels % g.offset_groups == 0, "hybridops.deform_conv2d: input channels (", g.channels,
              ") must be divisible by offset groups (", g.offset_groups, ")");
  TORCH_CHECK(offset.size(0) == input.size(0) && offset.size(2) == g.out_h && offset.size(3) == g.out_w,
              "hybridops.deform_conv2d: offset must be [", input.size(0), ", ", offset.size(1), ", ", g.out_h, ", ",
              g.out_w, "], got ", offset.sizes());
  g.use_mask = mask.has_value() && mask->defined();
  if (g.use_mask) {
    TORCH_CHECK(mask->dim() == 4 && mask->size(0) == input.size(0) && mask->size(1) == g.offset_groups * K &&
                    mask->size(2) == g.out_h && mask->size(3) == g.out_w,
                "hybridops.deform_conv2d: mask must be [", input.size(0), ", ", g.offset_groups * K, ", ", g.out_h,
                ", ", g.out_w, "], got ", mask->sizes());
  }
  // Devices and dtypes after the shapes (torchvision's order: a wrong shape is what gets reported).
  check_same(offset, "offset", input);
  check_same(weight, "weight", input);
  if (g.use_mask) check_same(*mask, "mask", input);
  g.batch = input.size(0);
  return g;
}

// Images per block: enough GEMM columns, within the columns budget.
inline int64_t block_images(const Geometry& g, int64_t element_size) {
  const int64_t per_image = std::max<int64_t>(1, g.channels * g.taps() * g.out_pixels() * element_size);
  const int64_t by_budget = std::max<int64_t>(1, kColumnsBudgetBytes / per_image);
  const int64_t by_gemm = (kTargetGemmColumns + g.out_pixels() - 1) / g.out_pixels();
  return std::max<int64_t>(1, std::min({g.batch, by_budget, by_gemm}));
}

// Runs body(n0, nb, gb, columns) over the blocks of images the columns buffer holds at a time:
// images [n0, n0 + nb), gb their geometry, columns their [G, C / G * K, nb * P] buffer (one
// allocation, reused by every block).
template <typename F>
void for_each_image_block(const Geometry& g, const at::Tensor& input, int64_t groups, const F& body) {
  const int64_t K = g.taps(), P = g.out_pixels(), B = block_images(g, input.element_size());
  at::Tensor storage = at::empty({g.channels * K * B * P}, input.options());
  for (int64_t n0 = 0; n0 < g.batch; n0 += B) {
    const int64_t nb = std::min(B, g.batch - n0);
    Geometry gb = g;
    gb.batch = nb;
    body(n0, nb, gb, storage.narrow(0, 0, g.channels * K * nb * P).view({groups, g.channels / groups * K, nb * P}));
  }
}

inline at::Tensor block_of(const at::Tensor& t, int64_t n0, int64_t nb) { return t.narrow(0, n0, nb); }

inline c10::optional<at::Tensor> block_of(const c10::optional<at::Tensor>& t, bool use, int64_t n0, int64_t nb) {
  if (!use) return c10::nullopt;
  return t->narrow(0, n0, nb);
}

// The scale of FixedPointAdd: a power of two such that no pixel's fixed-point sum can pass 2^61,
// given the largest |grad_columns * mask| and how many samples can reach one pixel (every tap of
// every output pixel, each adding at most that much: the four bilinear weights are <= 1).
inline double fixed_point_scale(double max_abs_contribution, int64_t samples_per_pixel) {
  const double bound = max_abs_contribution * static_cast<double>(samples_per_pixel);
  if (!(bound > 0) || !std::isfinite(bound)) return 1.0;
  int e = 0;
  std::frexp(bound, &e);  // bound < 2^e
  return std::ldexp(1.0, std::min(61 - e, 1000));
}

// max |t| as a 0-d double tensor on t's device, without a host sync; `finite_only` leaves NaN and
// infinities out (it allocates a cleaned copy, so it is kept for the rare non-finite case).
inline at::Tensor max_abs(const at::Tensor& t, bool finite_only = false) {
  if (t.numel() == 0) return at::zeros({}, t.options().dtype(at::kDouble));
  const at::Tensor u = finite_only ? t.nan_to_num(0.0, 0.0, 0.0) : t;
  auto [lo, hi] = at::aminmax(u);
  return at::maximum(lo.abs(), hi.abs()).to(at::kDouble);
}

// The largest |grad_columns * mask| (finite values), read with one host sync in the usual case.
inline double max_abs_contribution(const at::Tensor& grad_columns, const c10::optional<at::Tensor>& mask,
                                   bool use_mask) {
  auto bound = [&](bool finite_only) {
    at::Tensor m = max_abs(grad_columns, finite_only);
    if (use_mask) m = m * max_abs(*mask, finite_only);
    return m.item<double>();
  };
  const double b = bound(false);
  return std::isfinite(b) ? b : bound(true);
}

// grad_input += the scatter of grad_columns (col2im) in 64-bit fixed point: deterministic with
// any thread order, and as parallel as the atomic scatter. `launch(add)` runs col2im_item with
// `add` (a FixedPointAdd) over every sample item of the block, scattering into `add.base`.
// Precision: each contribution is rounded to 2^-e with 2^(61-e) > K * P * max|gcol * mask|, i.e.
// about 2^-41 of the largest contribution at HybridNetSeg's sizes (finer than fp32's rounding).
template <typename Launch>
void col2im_fixed_point(const Geometry& g, const c10::optional<at::Tensor>& mask, const at::Tensor& grad_columns,
                        at::Tensor& grad_input, Launch launch) {
  const double scale = fixed_point_scale(max_abs_contribution(grad_columns, mask, g.use_mask),
                                         g.taps() * g.out_pixels());
  // In grad_input's layout (NCHW, or channels-last for the fused CUDA backward): the same offsets.
  at::Tensor sums = at::zeros_like(grad_input, grad_input.options().dtype(at::kLong), at::MemoryFormat::Preserve);
  at::Tensor poison = at::zeros_like(grad_input, grad_input.options().dtype(at::kByte), at::MemoryFormat::Preserve);
  FixedPointAdd add{reinterpret_cast<unsigned long long*>(sums.data_ptr<int64_t>()), poison.data_ptr<uint8_t>(),
                    scale};
  launch(add);
  at::Tensor result = sums.to(at::kDouble).mul_(1.0 / scale);  // exact: scale is a power of two
  result.masked_fill_(poison.to(at::kBool), std::numeric_limits<double>::quiet_NaN());
  grad_input.add_(result);
}

// `t` as the kernels read it: contiguous NCHW, or `t` itself when it is channels-last
// (use_channels_last) and the caller's kernels read that (`keep_channels_last`: the fused CUDA
// kernels, which take each tensor's PixelLayout). A channels-last tensor the fused kernels read
// through 32-bit corner offsets (the input) is kept only under 2^31 elements an image.
inline at::Tensor dense(const at::Tensor& t, bool keep_channels_last, bool offsets_32bit = false) {
  const bool keep = keep_channels_last && use_channels_last(t) &&
                    (!offsets_32bit || t.size(1) * t.size(2) * t.size(3) < (int64_t(1) << 31));
  return keep ? t : t.contiguous();
}

// The PixelLayout of a tensor dense() returned: NCHW when contiguous, else channels-last.
inline PixelLayout layout_of(const at::Tensor& t) {
  const int64_t pixels = t.size(2) * t.size(3);
  if (t.is_contiguous()) return nchw_layout(t.size(1), pixels);
  TORCH_INTERNAL_ASSERT(t.is_contiguous(at::MemoryFormat::ChannelsLast), "layout_of: not NCHW nor channels-last");
  return nhwc_layout(t.size(1), pixels);
}

// The checked arguments of a forward call and its geometry: the common start of every forward
// algorithm (forward<Backend> below, the CPU's fused forward, the fused CUDA forward).
struct ForwardArgs {
  Geometry g;
  at::Tensor input, offset, weight;         // dense(): contiguous, or channels-last input and offset
  c10::optional<at::Tensor> mask, bias;     // mask (dense()) when g.use_mask; bias [Cout] when given
  int64_t groups;
  at::MemoryFormat out_format;              // the output's layout: the input's (result_format)
};

// `keep_channels_last`: keep a channels-last input, offset and mask as they are (dense()), for
// kernels that read either layout; forward<Backend> and the CPU's fused forward need
// contiguous_args() of such arguments.
inline ForwardArgs forward_args(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                bool keep_channels_last = false) {
  const Geometry g = make_geometry(input, offset, weight, mask, stride, padding, dilation);
  ForwardArgs a{g,
                dense(input, keep_channels_last, /*offsets_32bit=*/true),
                dense(offset, keep_channels_last),
                weight.contiguous(),
                c10::nullopt,
                c10::nullopt,
                0,
                result_format(input)};
  if (a.g.use_mask) a.mask = dense(*mask, keep_channels_last);
  const int64_t Cout = weight.size(0);
  if (bias.has_value() && bias->defined()) {
    check_same(*bias, "bias", input);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == Cout, "hybridops.deform_conv2d: bias must be [", Cout,
                "], got ", bias->sizes());
    a.bias = bias;
  }
  a.groups = a.g.channels / weight.size(1);
  return a;
}

// The same arguments, every tensor contiguous NCHW (`but_input`: the input left as it is).
inline ForwardArgs contiguous_args(ForwardArgs a, bool but_input = false) {
  if (!but_input) a.input = a.input.contiguous();
  a.offset = a.offset.contiguous();
  if (a.mask.has_value()) a.mask = a.mask->contiguous();
  return a;
}

// The (uninitialised) output [N, Cout, Ho, Wo] of a forward call, in `format` (forward<Backend>
// writes NCHW; the op returns a.out_format).
inline at::Tensor forward_output(const ForwardArgs& a, at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return empty_in_format({a.input.size(0), a.weight.size(0), a.g.out_h, a.g.out_w}, a.input.options(), format);
}

template <typename Backend>
at::Tensor forward(const ForwardArgs& a) {
  const Geometry& g = a.g;
  const at::Tensor &input = a.input, &offset = a.offset, &weight = a.weight;
  const c10::optional<at::Tensor>& mask = a.mask;
  const bool use_mask = g.use_mask, use_bias = a.bias.has_value();
  const int64_t N = input.size(0), Cout = weight.size(0), G = a.groups;
  const int64_t P = g.out_pixels();
  const int64_t rows_g = weight.size(1) * g.taps();  // GEMM inner dimension per group
  at::Tensor out = forward_output(a);
  if (N == 0) return out;

  const at::Tensor w_g = weight.view({G, Cout / G, rows_g});
  const c10::optional<at::Tensor> bias_g =
      use_bias ? c10::optional<at::Tensor>(a.bias->view({G, Cout / G, 1})) : c10::nullopt;
  for_each_image_block(g, input, G, [&](int64_t n0, int64_t nb, const Geometry& gb, at::Tensor columns) {
    Backend::im2col(gb, block_of(input, n0, nb), block_of(offset, n0, nb), block_of(mask, use_mask, n0, nb), columns);
    if (nb == 1) {
      at::Tensor out_g = out.select(0, n0).view({G, Cout / G, P});
      if (use_bias) {
        at::baddbmm_out(out_g, bias_g->expand({G, Cout / G, P}), w_g, columns);
      } else {
        at::bmm_out(out_g, w_g, columns);
      }
    } else {
      at::Tensor res = use_bias ? at::baddbmm(bias_g->expand({G, Cout / G, nb * P}), w_g, columns)
                                : at::bmm(w_g, columns);
      // [G, Cout/G, nb, P] -> [nb, G, Cout/G, P]
      out.narrow(0, n0, nb).view({nb, G, Cout / G, P}).copy_(res.view({G, Cout / G, nb, P}).permute({2, 0, 1, 3}));
    }
  });
  return out;
}

// The checked arguments of a backward call and its geometry: the common start of every backward
// algorithm (backward<Backend> below, the fused CUDA backward).
struct BackwardArgs {
  Geometry g;
  at::Tensor grad_out, input, offset, weight;  // dense(): contiguous, or channels-last but the weight
  c10::optional<at::Tensor> mask;              // dense() when g.use_mask
  int64_t groups;
  // The gradients' layouts (result_format of input, offset and mask); grad_weight is contiguous.
  at::MemoryFormat grad_input_format, grad_offset_format, grad_mask_format;
};

// `keep_channels_last`: as forward_args'.
inline BackwardArgs backward_args(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& offset,
                                  const at::Tensor& weight, const c10::optional<at::Tensor>& mask,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  bool keep_channels_last = false) {
  const Geometry g = make_geometry(input, offset, weight, mask, stride, padding, dilation);
  check_same(grad_out, "grad_output", input);
  const int64_t N = input.size(0), Cout = weight.size(0);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == N && grad_out.size(1) == Cout &&
                  grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
              "hybridops.deform_conv2d_backward: grad_output must be [", N, ", ", Cout, ", ", g.out_h, ", ", g.out_w,
              "], got ", grad_out.sizes());
  return BackwardArgs{g,
                      dense(grad_out, keep_channels_last),
                      dense(input, keep_channels_last, /*offsets_32bit=*/true),
                      dense(offset, keep_channels_last),
                      weight.contiguous(),
                      g.use_mask ? c10::optional<at::Tensor>(dense(*mask, keep_channels_last)) : c10::nullopt,
                      g.channels / weight.size(1),
                      result_format(input),
                      result_format(offset),
                      g.use_mask ? result_format(*mask) : at::MemoryFormat::Contiguous};
}

// The same arguments, every tensor contiguous NCHW.
inline BackwardArgs contiguous_args(BackwardArgs a) {
  a.grad_out = a.grad_out.contiguous();
  a.input = a.input.contiguous();
  a.offset = a.offset.contiguous();
  if (a.mask.has_value()) a.mask = a.mask->contiguous();
  return a;
}

// backward<Backend>'s NCHW gradients in the layouts the op returns (BackwardArgs' formats).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> in_result_layouts(
    const std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>& grads, const BackwardArgs& a) {
  const auto& [grad_input, grad_offset, grad_weight, grad_mask] = grads;
  return {grad_input.contiguous(a.grad_input_format), grad_offset.contiguous(a.grad_offset_format), grad_weight,
          a.g.use_mask ? grad_mask.contiguous(a.grad_mask_format) : grad_mask};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(const BackwardArgs& a) {
  const Geometry& g = a.g;
  const at::Tensor &grad_out = a.grad_out, &input = a.input, &offset = a.offset, &weight = a.weight;
  const c10::optional<at::Tensor>& mask = a.mask;
  const bool use_mask = g.use_mask;
  const int64_t N = input.size(0), Cout = weight.size(0);

  const int64_t G = a.groups;
  const int64_t K = g.taps(), P = g.out_pixels();
  const int64_t rows_g = weight.size(1) * K;
  const auto acc_dtype = at::toOpMathType(input.scalar_type());

  at::Tensor grad_input_acc = at::zeros(input.sizes(), input.options().dtype(acc_dtype));
  at::Tensor grad_offset = at::empty(offset.sizes(), offset.options());
  at::Tensor grad_mask = use_mask ? at::empty(mask->sizes(), mask->options()) : at::empty({0}, offset.options());
  at::Tensor grad_weight_acc = at::zeros({G, Cout / G, rows_g}, weight.options().dtype(acc_dtype));
  if (N == 0) {
    return {grad_input_acc.to(input.scalar_type()), grad_offset, grad_weight_acc.view(weight.sizes()).to(weight.scalar_type()),
            grad_mask};
  }

  const at::Tensor w_g_t = weight.view({G, Cout / G, rows_g}).transpose(1, 2);
  for_each_image_block(g, input, G, [&](int64_t n0, int64_t nb, const Geometry& gb, at::Tensor columns) {
    const at::Tensor in_b = block_of(input, n0, nb), off_b = block_of(offset, n0, nb);
    const c10::optional<at::Tensor> mask_b = block_of(mask, use_mask, n0, nb);
    // grad_out of the block as [G, Cout/G, nb * P]
    at::Tensor go_g = nb == 1 ? grad_out.select(0, n0).view({G, Cout / G, P})
                              : grad_out.narrow(0, n0, nb).view({nb, G, Cout / G, P}).permute({1, 2, 0, 3})
                                    .reshape({G, Cout / G, nb * P});
    at::Tensor grad_columns = at::bmm(w_g_t, go_g);  // [G, rows_g, nb * P] == [C * K, nb * P]
    at::Tensor grad_offset_b = block_of(grad_offset, n0, nb);
    at::Tensor grad_mask_b = use_mask ? block_of(grad_mask, n0, nb) : grad_mask;
    Backend::offset_mask_grad(gb, in_b, off_b, mask_b, grad_columns, grad_offset_b, grad_mask_b);
    at::Tensor grad_input_b = block_of(grad_input_acc, n0, nb);
    Backend::col2im(gb, off_b, mask_b, grad_columns, grad_input_b);

    Backend::im2col(gb, in_b, off_b, mask_b, columns);
    if (acc_dtype == input.scalar_type()) {
      grad_weight_acc.baddbmm_(go_g, columns.transpose(1, 2));
    } else {
      grad_weight_acc.add_(at::bmm(go_g, columns.transpose(1, 2)));
    }
  });
  at::Tensor grad_input = acc_dtype == input.scalar_type() ? grad_input_acc : grad_input_acc.to(input.scalar_type());
  at::Tensor grad_weight = grad_weight_acc.view(weight.sizes()).to(weight.scalar_type());
  return {grad_input, grad_offset, grad_weight, grad_mask};
}

}  // namespace dcn
}  // namespace hybridops
