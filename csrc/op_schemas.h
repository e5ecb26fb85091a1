// The schema of every hybridops op, defined once: torch.ops.hybridops.* (csrc/hybridops.cpp) and the
// CPU emulation of the CUDA kernels, torch.ops.hybridops_emu.* (csrc/emulation/emu_module.cpp),
// register exactly the same signatures.
#pragma once

#include <torch/library.h>

namespace hybridops {

inline void define_op_schemas(torch::Library& m) {
  // Modulated deformable convolution (DCNv2), torchvision's semantics and layouts.
  // input [N, C, H, W], offset [N, 2*OG*kH*kW, Ho, Wo], weight [Cout, C/groups, kH, kW],
  // mask [N, OG*kH*kW, Ho, Wo] or None (DCNv1), bias [Cout] or None -> [N, Cout, Ho, Wo].
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? mask, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  // -> (grad_input, grad_offset, grad_weight, grad_mask); grad_mask is empty ([0]) without mask.
  m.def(
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor weight, Tensor? mask, "
      "int[2] stride, int[2] padding, int[2] dilation) -> (Tensor, Tensor, Tensor, Tensor)");
  // Mixed-kernel depthwise convolution (MixConv): input [N, C, H, W], weights = one [C_g, 1, k_g, k_g]
  // tensor per channel group (odd k_g, sum C_g = C, groups in channel order), bias [C] or None;
  // "same" padding dilation * (k_g - 1) / 2 per group -> [N, C, ceil(H / stride_h), ceil(W / stride_w)].
  m.def(
      "mixed_depthwise_conv2d(Tensor input, Tensor[] weights, Tensor? bias, int[2] stride, int[2] dilation) "
      "-> Tensor");
  // -> (grad_input, grad_weights); output_mask = (want grad_input, want grad_weights): what is not
  // wanted comes back as an empty [0] tensor / an empty list. grad_bias is grad_output.sum((0, 2, 3)).
  m.def(
      "mixed_depthwise_conv2d_backward(Tensor grad_output, Tensor input, Tensor[] weights, int[2] stride, "
      "int[2] dilation, bool[2] output_mask) -> (Tensor, Tensor[])");
}

}  // namespace hybridops
