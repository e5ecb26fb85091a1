// CPU implementation of mixed_depthwise_conv2d, host side: checks, layouts (channels-last input
// goes to mixed_depthwise_conv2d_cpu_nhwc.cpp, or through a blocked transpose here), and the NCHW
// kernels of mixed_depthwise_conv2d_cpu_nchw_kernels.h (their design is described there) run with
// at::parallel_for on the widest ISA the CPU supports. Registered for the CPU dispatch key.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_isa.h"  // first: its -Wpsabi pragma
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_emulate_cuda.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_nhwc.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_driver.h"

namespace hybridops {
namespace mdc {
namespace {
using namespace nchw;  // Args, Pass: the NCHW kernels' problem description

template <typename scalar_t>
GroupPointers<const scalar_t> weight_pointers(const Geometry& g, const std::vector<at::Tensor>& weights) {
  GroupPointers<const scalar_t> wp{};
  for (int i = 0; i < g.num_groups; ++i) wp.ptr[i] = weights[i].data_ptr<scalar_t>();
  return wp;
}


// The kernels work on NCHW planes. A channels-last tensor is converted with a cache-blocked
// transpose (per image, [H*W, C] -> [C, H*W] in 64-pixel x 16-channel blocks, in parallel), which
// is several times faster than the generic strided copy behind .contiguous().
at::Tensor to_nchw(const at::Tensor& x) {
  if (x.is_contiguous()) return x;
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast) || x.numel() == 0) return x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor out = at::empty(x.sizes(), x.options());
  constexpr int64_t kPix = 64, kCh = 16;
  const int64_t pblocks = ceil_div(HW, kPix);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mixed_depthwise_conv2d_to_nchw", [&] {
    const scalar_t* src = x.data_ptr<scalar_t>();  // [N, H*W, C] in memory
    scalar_t* dst = out.data_ptr<scalar_t>();      // [N, C, H*W]
    at::parallel_for(0, N * pblocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / pblocks, p0 = (t % pblocks) * kPix, p1 = std::min(HW, p0 + kPix);
        const scalar_t* a = src + n * HW * C;
        scalar_t* b = dst + n * C * HW;
        for (int64_t c0 = 0; c0 < C; c0 += kCh) {
          const int64_t c1 = std::min(C, c0 + kCh);
          for (int64_t c = c0; c < c1; ++c) {
            for (int64_t p = p0; p < p1; ++p) b[c * HW + p] = a[p * C + c];
          }
        }
      }
    });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
at::Tensor forward_cpu(const at::Tensor& input_, at::TensorList weights_, const c10::optional<at::Tensor>& bias_,
                       at::IntArrayRef stride, at::IntArrayRef dilation) {
  const Geometry g = make_geometry(input_, weights_, stride, dilation);
  check_bias(bias_, input_);
  const std::vector<at::Tensor> weights = contiguous_all(weights_);
  const bool use_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = use_bias ? bias_->contiguous() : at::Tensor();
  if (use_channels_last(input_) && !emulate_cuda()) return forward_nhwc_cpu(g, input_, weights, bias);
  const at::Tensor input = to_nchw(input_);
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, input.options());
  if (out.numel() == 0) return in_layout_of(out, input_);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_cpu", [&] {
    Args<scalar_t> a{};
    a.g = g;
    a.input = input.data_ptr<scalar_t>();
    a.bias = use_bias ? bias.data_ptr<scalar_t>() : nullptr;
    a.w = weight_pointers<scalar_t>(g, weights);
    a.out = out.data_ptr<scalar_t>();
    if (emulate_cuda()) {
      emu_forward(g, a.w, a.input, a.bias, a.out, g.height, g.width, g.out_h, g.out_w, false);
      return;
    }
    const int64_t work = g.out_h * g.out_w * g.max_kernel * g.max_kernel + g.height * g.width;
    run_parallel(Pass::kForward, a, g.batch * g.channels, work);
  });
  return in_layout_of(out, input_);
}

std::tuple<at::Tensor, std::vector<at::Tensor>> backward_cpu(const at::Tensor& grad_out_, const at::Tensor& input_,
                                                             at::TensorList weights_, at::IntArrayRef stride,
                                                             at::IntArrayRef dilation,
                                                             std::array<bool, 2> output_mask) {
  const Geometry g = make_geometry(input_, weights_, stride, dilation);
  check_grad_output(grad_out_, g, input_);
  if (use_channels_last(input_) && !emulate_cuda()) {
    return backward_nhwc_cpu(g, grad_out_, input_, contiguous_all(weights_), output_mask);
  }
  const at::Tensor input = to_nchw(input_);
  const at::Tensor grad_out = to_nchw(grad_out_);
  const std::vector<at::Tensor> weights = contiguous_all(weights_);
  at::Tensor grad_input = output_mask[0] ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  std::vector<at::Tensor> grad_weights;
  if (output_mask[1]) {
    for (const auto& w : weights) grad_weights.push_back(at::empty(w.sizes(), w.options()));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_backward_cpu",
                                  [&] {
    Args<scalar_t> a{};
    a.g = g;
    a.input = input.data_ptr<scalar_t>();
    a.grad_out = grad_out.data_ptr<scalar_t>();
    a.w = weight_pointers<scalar_t>(g, weights);
    const int64_t work = g.out_h * g.out_w * g.max_kernel * g.max_kernel + g.height * g.width;
    const bool emulate = emulate_cuda();
    if (output_mask[0] && grad_input.numel() > 0) {
      a.out = grad_input.data_ptr<scalar_t>();
      if (emulate && g.stride_h == 1 && g.stride_w == 1) {
        emu_forward(g, a.w, a.grad_out, static_cast<const scalar_t*>(nullptr), a.out, g.out_h, g.out_w, g.height,
                    g.width, true);
      } else if (emulate) {
        emu_grad_input_gather(g, a.w, a.grad_out, a.out);
      } else {
        run_parallel(Pass::kGradInput, a, g.batch * g.channels, work);
      }
    }
    if (output_mask[1]) {
      for (int i = 0; i < g.num_groups; ++i) a.grad_w.ptr[i] = grad_weights[i].data_ptr<scalar_t>();
      if (emulate) {
        emu_grad_weight(g, a.input, a.grad_out, a.grad_w);
      } else {
        run_parallel(Pass::kGradWeight, a, g.channels, std::max<int64_t>(1, g.batch) * work);
      }
    }
  });
  return {output_mask[0] ? in_layout_of(grad_input, input_) : grad_input, grad_weights};
}

}  // namespace

TORCH_LIBRARY_IMPL(hybridops, CPU, m) {
  m.impl("mixed_depthwise_conv2d", &forward_cpu);
  m.impl("mixed_depthwise_conv2d_backward", &backward_cpu);
}

}  // namespace mdc
}  // namespace hybridops
