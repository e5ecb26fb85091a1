// Autocast for mixed_depthwise_conv2d: under torch.autocast the op runs natively in the autocast
// dtype (fp16 or bf16) with float accumulation; input, weights and bias are cast together.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

namespace hybridops {
namespace mdc {
namespace {

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor mixed_depthwise_conv2d_autocast(const at::Tensor& input, at::TensorList weights,
                                           const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                           at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hybridops::mixed_depthwise_conv2d", "")
                       .typed<at::Tensor(const at::Tensor&, at::TensorList, const c10::optional<at::Tensor>&,
                                         at::IntArrayRef, at::IntArrayRef)>();
  const auto dtype = at::autocast::get_autocast_dtype(device);
  auto cast = [&](const at::Tensor& t) { return at::autocast::cached_cast(dtype, t, device); };
  std::vector<at::Tensor> cast_weights;
  cast_weights.reserve(weights.size());
  for (const auto& w : weights) cast_weights.push_back(cast(w));
  c10::optional<at::Tensor> cast_bias = bias;
  if (bias.has_value() && bias->defined()) cast_bias = cast(*bias);
  return op.call(cast(input), cast_weights, cast_bias, stride, dilation);
}

}  // namespace

TORCH_LIBRARY_IMPL(hybridops, Autocast, m) {
  m.impl("mixed_depthwise_conv2d",
         &mixed_depthwise_conv2d_autocast<c10::DispatchKey::Autocast, c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(hybridops, AutocastCPU, m) {
  m.impl("mixed_depthwise_conv2d",
         &mixed_depthwise_conv2d_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

}  // namespace mdc
}  // namespace hybridops
