// CPU implementation of mixed_depthwise_conv2d for channels-last (NHWC) tensors, host side: packs
// the weights, describes the problem and runs the kernels of mixed_depthwise_conv2d_cpu_nhwc_kernels.h
// (their design, below) on the widest ISA the CPU supports.
//
//
// In NHWC memory a pixel's channels are contiguous, so these kernels vectorise over channels: each
// SIMD lane is one channel, and a group's weights are packed tap-major ([k*k, C_g], one vector
// load gives one tap's weights for consecutive channels). No tiles and no transposes:
//  * forward, and grad_input at stride 1 (the forward on grad_output with the flipped kernel):
//    tasks are output rows (image, h_out). Per channel group and channel block, U consecutive
//    outputs share every tap's weight vectors; outputs whose taps leave the image take a path with
//    clipped tap ranges.
//  * grad_input at stride > 1: tasks are input rows; every pixel gathers the taps whose output
//    exists (in range and stride-aligned): no scatter, no races.
//  * grad_weight: tasks are (channel block, chunk of output rows); each writes its own partial
//    sums [tap, channel], added in chunk order afterwards. Blocks and chunks depend only on the
//    shapes, never on the thread count or the ISA, and each lane is one channel, so the result is
//    the same bit for bit on any machine with the same FMA behaviour and any number of threads.
// fp16/bf16 tensors are read in their storage type and widened to float as they are loaded (float
// accumulation); output rows go through a float row buffer per thread. No whole-tensor copies.
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_isa.h"  // first: its -Wpsabi pragma
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_nhwc.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace hybridops {
namespace mdc {
namespace {
using namespace nhwc;  // Problem, NhwcPass, kGradWeight*: the NHWC kernels' problem description

constexpr auto kNhwc = at::MemoryFormat::ChannelsLast;

// ---- host side ----------------------------------------------------------------------------------
at::ScalarType compute_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

// Each group's weights [C_g, 1, k, k] as [k*k, C_g] in the compute dtype (kernel flipped if asked).
std::vector<at::Tensor> pack_weights(const std::vector<at::Tensor>& weights, at::ScalarType type, bool flip) {
  std::vector<at::Tensor> packed;
  for (const auto& w : weights) {
    const at::Tensor wf = flip ? w.flip({2, 3}) : w;
    packed.push_back(wf.to(type).reshape({w.size(0), w.size(2) * w.size(3)}).t().contiguous());
  }
  return packed;
}

template <typename acc_t, typename in_t>
Problem<acc_t, in_t> make_problem(const Geometry& g, const std::vector<at::Tensor>& packed) {
  Problem<acc_t, in_t> p{};
  p.g = g;
  for (size_t i = 0; i < packed.size(); ++i) p.w[i] = packed[i].data_ptr<acc_t>();
  return p;
}

int64_t forward_work(const Geometry& g, int64_t out_w) {
  return out_w * g.channels * g.max_kernel * g.max_kernel;
}

// out = conv(src) over rows of dst, src/dst channels-last in the storage dtype.
template <typename acc_t, typename in_t>
void conv_rows(Problem<acc_t, in_t>& p, const at::Tensor& src, const at::Tensor& dst, int64_t src_h, int64_t src_w) {
  p.src = src.data_ptr<in_t>();
  p.dst = dst.data_ptr<in_t>();
  p.src_h = src_h;
  p.src_w = src_w;
  p.dst_h = dst.size(2);
  p.dst_w = dst.size(3);
  run_parallel(NhwcPass::kForward, p, p.g.batch * p.dst_h, forward_work(p.g, p.dst_w));
}

}  // namespace

at::Tensor forward_nhwc_cpu(const Geometry& g, const at::Tensor& input, const std::vector<at::Tensor>& weights,
                            const at::Tensor& bias) {
  const at::ScalarType type = compute_type(input.scalar_type());
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, input.options().memory_format(kNhwc));
  if (out.numel() > 0) {
    const at::Tensor x = input.contiguous(kNhwc);
    const at::Tensor b = bias.defined() ? bias.to(type).contiguous() : at::Tensor();
    const std::vector<at::Tensor> packed = pack_weights(weights, type, false);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_cpu_nhwc",
                                    [&] {
      using acc_t = at::opmath_type<scalar_t>;
      Problem<acc_t, scalar_t> p = make_problem<acc_t, scalar_t>(g, packed);
      p.bias = b.defined() ? b.data_ptr<acc_t>() : nullptr;
      conv_rows(p, x, out, g.height, g.width);
    });
  }
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> backward_nhwc_cpu(const Geometry& g, const at::Tensor& grad_output,
                                                                  const at::Tensor& input,
                                                                  const std::vector<at::Tensor>& weights,
                                                                  std::array<bool, 2> output_mask) {
  const at::ScalarType type = compute_type(input.scalar_type());
  const at::Tensor go = grad_output.contiguous(kNhwc);  // a copy (storage dtype) only if not channels-last
  at::Tensor grad_input = at::empty({0}, input.options());
  std::vector<at::Tensor> grad_weights;
  if (output_mask[0]) {
    grad_input = at::empty(input.sizes(), input.options().memory_format(kNhwc));
    if (grad_input.numel() > 0) {
      const bool unit_stride = g.stride_h == 1 && g.stride_w == 1;
      const std::vector<at::Tensor> packed = pack_weights(weights, type, unit_stride);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                      "mixed_depthwise_conv2d_backward_cpu_nhwc", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        Problem<acc_t, scalar_t> p = make_problem<acc_t, scalar_t>(g, packed);
        if (unit_stride) {  // the forward on grad_output with the flipped kernel (H_out == H)
          conv_rows(p, go, grad_input, g.out_h, g.out_w);
        } else {
          p.src = go.data_ptr<scalar_t>();
          p.dst = grad_input.data_ptr<scalar_t>();
          run_parallel(NhwcPass::kGather, p, g.batch * g.height, forward_work(g, g.width));
        }
      });
    }
  }
  if (output_mask[1]) {
    const at::Tensor x = input.contiguous(kNhwc);
    std::vector<std::array<int64_t, 3>> blocks;
    int64_t part_offset[kMaxGroups] = {};
    int64_t part_total = 0;
    for (int gi = 0; gi < g.num_groups; ++gi) {
      const int64_t c0 = g.group_begin[gi], c1 = g.group_begin[gi + 1];
      for (int64_t c = c0; c < c1; c += kGradWeightBlock) blocks.push_back({gi, c, std::min(c1, c + kGradWeightBlock)});
      part_offset[gi] = part_total;
      part_total += (c1 - c0) * g.kernel[gi] * g.kernel[gi];
    }
    const int64_t rows = g.batch * g.out_h;
    const int64_t nblocks = static_cast<int64_t>(blocks.size());
    const int64_t chunks = std::max<int64_t>(1, std::min(rows, ceil_div(kGradWeightTasks, nblocks)));
    const int64_t rows_per_chunk = std::max<int64_t>(1, ceil_div(rows, chunks));
    at::Tensor partial = at::empty({chunks, part_total}, x.options().dtype(type).memory_format(at::MemoryFormat::Contiguous));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                    "mixed_depthwise_conv2d_backward_cpu_nhwc", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      Problem<acc_t, scalar_t> p = make_problem<acc_t, scalar_t>(g, {});
      p.src = go.data_ptr<scalar_t>();
      p.input = x.data_ptr<scalar_t>();
      p.partial = partial.data_ptr<acc_t>();
      std::copy(part_offset, part_offset + kMaxGroups, p.part_offset);
      p.part_total = part_total;
      p.chunks = chunks;
      p.rows_per_chunk = rows_per_chunk;
      p.blocks = &blocks;
      const int64_t work = rows_per_chunk * g.out_w * kGradWeightBlock * g.max_kernel * g.max_kernel;
      run_parallel(NhwcPass::kGradWeight, p, nblocks * chunks, work);
    });
    // Sum the chunks in chunk order, then [k*k, C_g] -> [C_g, 1, k, k] per group.
    at::Tensor total = at::empty({part_total}, partial.options());
    AT_DISPATCH_FLOATING_TYPES(type, "mixed_depthwise_conv2d_backward_cpu_nhwc", [&] {
      const scalar_t* src = partial.data_ptr<scalar_t>();
      scalar_t* dst = total.data_ptr<scalar_t>();
      at::parallel_for(0, part_total, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
          scalar_t s = src[e];
          for (int64_t r = 1; r < chunks; ++r) s += src[r * part_total + e];
          dst[e] = s;
        }
      });
    });
    for (int gi = 0; gi < g.num_groups; ++gi) {
      const int64_t k = g.kernel[gi], Cg = g.group_begin[gi + 1] - g.group_begin[gi];
      grad_weights.push_back(total.narrow(0, part_offset[gi], k * k * Cg)
                                 .view({k * k, Cg})
                                 .t()
                                 .reshape({Cg, 1, k, k})
                                 .to(weights[gi].scalar_type())
                                 .contiguous());
    }
  }
  return {grad_input, grad_weights};
}

}  // namespace mdc
}  // namespace hybridops
