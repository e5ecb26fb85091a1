// Host-side argument checks and geometry of mixed_depthwise_conv2d, shared by the CPU and CUDA
// implementations. The Python wrapper checks the same things first with friendlier text; these
// checks keep direct torch.ops calls safe.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "common/memory_format.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_kernel.h"

namespace hybridops {
namespace mdc {

#define MDC_OP "hybridops.mixed_depthwise_conv2d"

inline void check_like(const at::Tensor& t, const std::string& name, const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), MDC_OP ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), MDC_OP ": ", name, " has dtype ", t.scalar_type(),
              " but input has dtype ", input.scalar_type());
}

// Limits that keep every index of the kernels in range: the group table holds int32 channel
// offsets, per-channel tap counts k*k are ints, and tap offsets i * dilation, strides and paddings
// are ints in the per-thread bodies. Far beyond any real layer; checked before any data is read.
constexpr int64_t kMaxChannels = INT32_MAX;
constexpr int64_t kMaxKernel = 32767;              // k * k < 2^30
constexpr int64_t kMaxStrideOrReach = int64_t(1) << 30;  // stride, dilation * (k - 1)

// Validates input [N, C, H, W], weights [C_g, 1, k_g, k_g] (odd k_g, sum C_g == C), stride and
// dilation, and returns the geometry with the group table filled in.
inline Geometry make_geometry(const at::Tensor& input, at::TensorList weights, at::IntArrayRef stride,
                              at::IntArrayRef dilation) {
  TORCH_CHECK(input.dim() == 4, MDC_OP ": input must be 4-D [N, C, H, W], got ", input.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), MDC_OP ": input must be floating point, got ",
              input.scalar_type());
  TORCH_CHECK(stride.size() == 2 && dilation.size() == 2, MDC_OP ": stride and dilation must have 2 values each");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, MDC_OP ": stride must be positive, got (", stride[0], ", ", stride[1],
              ")");
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, MDC_OP ": dilation must be positive, got (", dilation[0], ", ",
              dilation[1], ")");
  TORCH_CHECK(stride[0] < kMaxStrideOrReach && stride[1] < kMaxStrideOrReach, MDC_OP ": stride must be below 2^30, got (",
              stride[0], ", ", stride[1], ")");
  TORCH_CHECK(dilation[0] < kMaxStrideOrReach && dilation[1] < kMaxStrideOrReach, MDC_OP
              ": dilation must be below 2^30, got (", dilation[0], ", ", dilation[1], ")");
  TORCH_CHECK(input.size(1) <= kMaxChannels, MDC_OP ": input has ", input.size(1), " channels; at most ", kMaxChannels,
              " are supported (int32 group table)");
  const int64_t num_groups = static_cast<int64_t>(weights.size());
  TORCH_CHECK(num_groups >= 1, MDC_OP ": weights must hold at least one tensor");
  TORCH_CHECK(num_groups <= kMaxGroups, MDC_OP ": at most ", kMaxGroups, " kernel groups are supported, got ",
              num_groups);
  Geometry g{};
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];
  g.out_h = out_extent(g.height, g.stride_h);  // timm's padding rule (see the kernel header)
  g.out_w = out_extent(g.width, g.stride_w);
  g.num_groups = static_cast<int32_t>(num_groups);
  g.max_kernel = 0;
  int64_t c = 0;
  for (int64_t i = 0; i < num_groups; ++i) {
    const at::Tensor& w = weights[i];
    const std::string name = "weights[" + std::to_string(i) + "]";
    check_like(w, name, input);
    TORCH_CHECK(w.dim() == 4 && w.size(1) == 1 && w.size(2) == w.size(3), MDC_OP ": ", name,
                " must be [C_i, 1, k, k], got ", w.sizes());
    const int64_t k = w.size(2);
    TORCH_CHECK(k >= 1 && k % 2 == 1, MDC_OP ": ", name, " has kernel size ", k,
                "; kernel sizes must be odd and positive");
    TORCH_CHECK(k <= kMaxKernel, MDC_OP ": ", name, " has kernel size ", k, "; at most ", kMaxKernel,
                " is supported");
    TORCH_CHECK(dilation[0] * (k - 1) < kMaxStrideOrReach && dilation[1] * (k - 1) < kMaxStrideOrReach, MDC_OP
                ": dilation * (kernel_size - 1) must be below 2^30, got dilation (", dilation[0], ", ", dilation[1],
                ") with ", name, " of kernel size ", k);
    TORCH_CHECK(w.size(0) >= 1, MDC_OP ": ", name, " has no channels (shape ", w.sizes(), ")");
    TORCH_CHECK(c + w.size(0) <= kMaxChannels, MDC_OP ": the weights' channels sum to more than ", kMaxChannels,
                "; at most ", kMaxChannels, " channels are supported (int32 group table)");
    g.group_begin[i] = static_cast<int32_t>(c);
    g.kernel[i] = static_cast<int32_t>(k);
    g.max_kernel = std::max<int32_t>(g.max_kernel, static_cast<int32_t>(k));
    c += w.size(0);
  }
  TORCH_CHECK(c == g.channels, MDC_OP ": the weights' channels sum to ", c, " but input has ", g.channels,
              " channels");
  g.group_begin[num_groups] = static_cast<int32_t>(c);
  return g;
}

inline void check_bias(const c10::optional<at::Tensor>& bias, const at::Tensor& input) {
  if (!bias.has_value() || !bias->defined()) return;
  check_like(*bias, "bias", input);
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == input.size(1), MDC_OP ": bias must be [", input.size(1),
              "], got ", bias->sizes());
}

inline void check_grad_output(const at::Tensor& grad_out, const Geometry& g, const at::Tensor& input) {
  check_like(grad_out, "grad_output", input);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == g.batch && grad_out.size(1) == g.channels &&
                  grad_out.size(2) == g.out_h && grad_out.size(3) == g.out_w,
              MDC_OP "_backward: grad_output must be [", g.batch, ", ", g.channels, ", ", g.out_h, ", ", g.out_w,
              "], got ", grad_out.sizes());
}

// The op's results are channels-last when use_channels_last(input) (common/memory_format.h). The CPU
// then runs its channels-last kernels; CUDA (NCHW kernels) converts.

// `t` in the layout the op promises for `input` (see use_channels_last).
inline at::Tensor in_layout_of(const at::Tensor& t, const at::Tensor& input) {
  return use_channels_last(input) ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
}

inline std::vector<at::Tensor> contiguous_all(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

}  // namespace mdc
}  // namespace hybridops
