// Autocast for deform_conv2d: under torch.autocast the op runs natively in the autocast dtype
// (fp16 or bf16) with float accumulation -- unlike torchvision, whose autocast upcasts to fp32.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace hybridops {
namespace dcn {
namespace {

template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor deform_conv2d_autocast(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hybridops::deform_conv2d", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef)>();
  const auto dtype = at::autocast::get_autocast_dtype(device);
  auto cast = [&](const at::Tensor& t) { return at::autocast::cached_cast(dtype, t, device); };
  auto cast_opt = [&](const c10::optional<at::Tensor>& t) -> c10::optional<at::Tensor> {
    if (!t.has_value() || !t->defined()) return t;
    return cast(*t);
  };
  return op.call(cast(input), cast(offset), cast(weight), cast_opt(mask), cast_opt(bias), stride, padding, dilation);
}

}  // namespace

TORCH_LIBRARY_IMPL(hybridops, Autocast, m) {
  m.impl("deform_conv2d", &deform_conv2d_autocast<c10::DispatchKey::Autocast, c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(hybridops, AutocastCPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

}  // namespace dcn
}  // namespace hybridops
