// Channels-last (NHWC) CPU path of mixed_depthwise_conv2d, called by the CPU impl
// (mixed_depthwise_conv2d_cpu.cpp) when the input is channels-last contiguous. Output and
// grad_input come back channels-last, like PyTorch's own convolutions.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>
#include <vector>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_driver.h"

namespace hybridops {
namespace mdc {

// input: [N, C, H, W] channels-last; weights: [C_i, 1, k_i, k_i]; bias: [C] or undefined.
at::Tensor forward_nhwc_cpu(const Geometry& g, const at::Tensor& input, const std::vector<at::Tensor>& weights,
                            const at::Tensor& bias);

// grad_output: [N, C, H_out, W_out] (any layout); returns grad_input (channels-last; empty [0] when
// not asked for) and the weights' gradients (empty list when not asked for).
std::tuple<at::Tensor, std::vector<at::Tensor>> backward_nhwc_cpu(const Geometry& g, const at::Tensor& grad_output,
                                                                  const at::Tensor& input,
                                                                  const std::vector<at::Tensor>& weights,
                                                                  std::array<bool, 2> output_mask);

}  // namespace mdc
}  // namespace hybridops
