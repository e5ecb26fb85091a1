// CPU implementation of deform_conv2d: the shared per-element math run with at::parallel_for.
// Every kernel is deterministic: grad_input is gathered by workers that own disjoint planes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>

#include "deform_conv2d/deform_conv2d_algo.h"
#include "deform_conv2d/deform_conv2d_cpu_fused.h"
#include "deform_conv2d/deform_conv2d_driver.h"

namespace hybridops {
namespace dcn {
namespace {

template <typename T>
const T* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

constexpr int64_t kGrain = 256;  // sample items per task (each loops over a group's channels)

struct CpuBackend {
  static void im2col(const Geometry& g, const at::Tensor& input, const at::Tensor& offset,
                     const c10::optional<at::Tensor>& mask, at::Tensor& columns) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_im2col_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* in = input.data_ptr<scalar_t>();
      const scalar_t* off = offset.data_ptr<scalar_t>();
      const scalar_t* msk = data_or_null<scalar_t>(mask);
      scalar_t* col = columns.data_ptr<scalar_t>();
      at::parallel_for(0, g.sample_items(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) im2col_item<scalar_t, acc_t, int64_t>(g, in, off, msk, col, i);
      });
    });
  }

  static void offset_mask_grad(const Geometry& g, const at::Tensor& input, const at::Tensor& offset,
                               const c10::optional<at::Tensor>& mask, const at::Tensor& grad_columns,
                               at::Tensor& grad_offset, at::Tensor& grad_mask) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_offset_grad_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* in = input.data_ptr<scalar_t>();
      const scalar_t* off = offset.data_ptr<scalar_t>();
      const scalar_t* msk = data_or_null<scalar_t>(mask);
      const scalar_t* gcol = grad_columns.data_ptr<scalar_t>();
      scalar_t* goff = grad_offset.data_ptr<scalar_t>();
      scalar_t* gmsk = g.use_mask ? grad_mask.data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, g.sample_items(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          offset_mask_grad_item<scalar_t, acc_t, int64_t>(g, in, off, msk, gcol, goff, gmsk, i);
        }
      });
    });
  }

  // Tasks are (image, block of channels inside one offset group); each owns its grad planes.
  // HYBRIDOPS_DCN_CPU_COL2IM=fixed_point runs the CUDA deterministic algorithm instead (a parallel
  // scatter in 64-bit fixed point, FixedPointAdd), so tests can check it on the CPU.
  static void col2im(const Geometry& g, const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                     const at::Tensor& grad_columns, at::Tensor& grad_input) {
    const char* algo = std::getenv("HYBRIDOPS_DCN_CPU_COL2IM");
    if (algo != nullptr && std::string(algo) == "fixed_point") {
      col2im_fixed_point_cpu(g, offset, mask, grad_columns, grad_input);
      return;
    }
    const int64_t cpg = g.channels_per_offset_group();
    const int64_t threads = at::get_num_threads();
    // Enough channel blocks to keep every thread busy; larger blocks reuse the bilinear weights more.
    const int64_t want_tasks = 4 * threads;
    const int64_t blocks_per_group =
        std::max<int64_t>(1, std::min<int64_t>(cpg, (want_tasks + g.batch * g.offset_groups - 1) /
                                                         (g.batch * g.offset_groups)));
    const int64_t block = (cpg + blocks_per_group - 1) / blocks_per_group;
    const int64_t nblocks = (cpg + block - 1) / block;
    const int64_t tasks = g.batch * g.offset_groups * nblocks;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, offset.scalar_type(), "deform_col2im_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* off = offset.data_ptr<scalar_t>();
      const scalar_t* msk = data_or_null<scalar_t>(mask);
      const scalar_t* gcol = grad_columns.data_ptr<scalar_t>();
      acc_t* gin = grad_input.data_ptr<acc_t>();
      at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t cb = t % nblocks;
          const int64_t og = (t / nblocks) % g.offset_groups;
          const int64_t b = t / (nblocks * g.offset_groups);
          const int64_t c_begin = og * cpg + cb * block;
          const int64_t c_end = std::min(og * cpg + cpg, c_begin + block);
          col2im_planes<scalar_t, acc_t, int64_t, acc_t>(g, off, msk, gcol, gin, b, c_begin, c_end, 0, g.taps());
        }
      });
    });
  }

  static void col2im_fixed_point_cpu(const Geometry& g, const at::Tensor& offset,
                                     const c10::optional<at::Tensor>& mask, const at::Tensor& grad_columns,
                                     at::Tensor& grad_input) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, offset.scalar_type(), "deform_col2im_fixed_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* off = offset.data_ptr<scalar_t>();
      const scalar_t* msk = data_or_null<scalar_t>(mask);
      const scalar_t* gcol = grad_columns.data_ptr<scalar_t>();
      col2im_fixed_point(g, mask, grad_columns, grad_input, [&](const FixedPointAdd& add) {
        at::parallel_for(0, g.sample_items(), kGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            col2im_item<scalar_t, acc_t, int64_t, unsigned long long>(g, off, msk, gcol, add.base, i, add);
          }
        });
      });
    });
  }
};

// Which CPU forward runs: HYBRIDOPS_DCN_ALGO=fused|im2col forces one (deform_conv2d_algo.h); unset
// or "auto" takes the fused forward (deform_conv2d_cpu_fused.h, which covers every shape, dtype,
// groups, offset groups and mask setting) unless its weight is too large to stay in cache
// (fused_forward_preferred: over kFusedMaxWeightBytes = 16 MB, e.g. 1024 channels with a 3x3
// kernel in fp32). The backward always runs the im2col algorithm.
bool use_fused_forward(const ForwardArgs& args) {
  switch (requested_algo()) {
    case Algo::kIm2col:
      return false;
    case Algo::kFused:
      return true;
    case Algo::kAuto:
      break;
  }
  return fused_forward_preferred(args);
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const ForwardArgs args =
      forward_args(input, offset, weight, mask, bias, stride, padding, dilation, /*keep_channels_last=*/true);
  // Both algorithms write NCHW; a channels-last input gets a channels-last output (result_format).
  // The fused forward gathers from NHWC, so it takes a channels-last input as it is.
  const at::Tensor out = use_fused_forward(args) ? forward_fused_cpu(contiguous_args(args, /*but_input=*/true))
                                                 : forward<CpuBackend>(contiguous_args(args));
  return out.contiguous(args.out_format);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  const BackwardArgs args = backward_args(grad_out, input, offset, weight, mask, stride, padding, dilation);
  return in_result_layouts(backward<CpuBackend>(args), args);
}

}  // namespace

TORCH_LIBRARY_IMPL(hybridops, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_cpu);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace dcn
}  // namespace hybridops
