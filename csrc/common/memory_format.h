// The layout rule of the ops' results, shared by the mixed depthwise conv and deform_conv2d (and by
// their fake kernels in Python: result_memory_format in hybridops/ops/_args.py).
#pragma once

#include <ATen/ATen.h>

namespace hybridops {

// True when a 4-D tensor is channels-last contiguous and not also NCHW contiguous (a tensor that is
// both, e.g. one channel or a 1x1 plane, counts as NCHW).
inline bool use_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// The layout a result derived from `t` takes (output and grad_input from the input, a gradient
// from its tensor): channels-last when use_channels_last(t), else contiguous.
inline at::MemoryFormat result_format(const at::Tensor& t) {
  return use_channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// An uninitialised tensor of `sizes` laid out as at::empty(sizes).contiguous(format) would be: a
// shape that is both NCHW- and channels-last-contiguous (one channel, a 1x1 plane) keeps NCHW
// strides. The same strides as the fake kernels' `new_empty(shape).contiguous(memory_format=...)`.
inline at::Tensor empty_in_format(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  at::Tensor t = at::empty(sizes, options);
  if (format == at::MemoryFormat::ChannelsLast && !t.is_contiguous(format)) {
    t = at::empty(sizes, options.memory_format(format));
  }
  return t;
}

}  // namespace hybridops
