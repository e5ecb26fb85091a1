// CUDA implementation of deform_conv2d: the shared per-element math (deform_conv2d_kernel.h) in
// grid-stride kernels, 32-bit indexing when every size allows it, 64-bit otherwise. GEMMs go to
// cuBLAS through the shared driver.
//
// grad_input: by default an atomic scatter into a float/double buffer (no half atomics needed, so
// the code stays portable to sm_61). Under torch.use_deterministic_algorithms(True) the same
// scatter adds 64-bit fixed-point integers instead (unsigned long long atomicAdd, sm_35+): integer
// sums do not depend on the order of the adds, so the bits are the same on every run and GPU.
//
// The same text also compiles for the CPU emulation of CUDA (common/cuda_launch.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "common/cuda_launch.h"
#include "common/cuda_wmma.h"

#include <atomic>
#include <limits>
#include <type_traits>

#include "deform_conv2d/deform_conv2d_driver.h"
#include "deform_conv2d/deform_conv2d_fused_plan.h"

namespace hybridops {
namespace dcn {
namespace {

constexpr int kThreads = 256;

// Blocks for n grid-stride items: at most 2^20 (HYBRIDOPS_MAX_GRID_BLOCKS may force fewer).
inline int64_t grid_for(int64_t n) {
  return capped_grid_blocks(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20)));
}

// 32-bit indices are safe when every flat index, plus a grid stride, stays below 2^31
// (HYBRIDOPS_FORCE_INT64_INDEX=1 takes the 64-bit kernels anyway).
inline bool fits_int32(std::initializer_list<int64_t> sizes) {
  if (force_int64_index()) return false;
  for (int64_t s : sizes) {
    if (s >= (int64_t(1) << 30)) return false;
  }
  return true;
}

template <typename T>
const T* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

template <typename scalar_t, typename index_t>
__global__ void im2col_kernel(Geometry g, const scalar_t* in, const scalar_t* off, const scalar_t* msk,
                              scalar_t* col, index_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(blockDim.x) * gridDim.x) {
    im2col_item<scalar_t, acc_t, index_t>(g, in, off, msk, col, i);
  }
}

template <typename scalar_t, typename index_t>
__global__ void offset_mask_grad_kernel(Geometry g, const scalar_t* in, const scalar_t* off, const scalar_t* msk,
                                        const scalar_t* gcol, scalar_t* goff, scalar_t* gmsk, index_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(blockDim.x) * gridDim.x) {
    offset_mask_grad_item<scalar_t, acc_t, index_t>(g, in, off, msk, gcol, goff, gmsk, i);
  }
}

struct AtomicAdd {
  template <typename T>
  __device__ __forceinline__ void operator()(T* address, T value) const {
    gpuAtomicAdd(address, value);
  }
};

// col2im_item over every sample item, scattering with `add`: AtomicAdd into a float/double buffer
// (fast, order-dependent bits) or FixedPointAdd into 64-bit integers (deterministic).
template <typename scalar_t, typename index_t, typename grad_t, typename AddFn>
__global__ void col2im_scatter_kernel(Geometry g, const scalar_t* off, const scalar_t* msk, const scalar_t* gcol,
                                      grad_t* gin, AddFn add, index_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(blockDim.x) * gridDim.x) {
    col2im_item<scalar_t, acc_t, index_t, grad_t>(g, off, msk, gcol, gin, i, add);
  }
}

template <typename scalar_t, typename grad_t, typename AddFn>
void launch_col2im_scatter(const Geometry& g, const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                           const at::Tensor& grad_columns, grad_t* gin, int64_t gin_numel, AddFn add) {
  const int64_t n = g.sample_items();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (fits_int32({n, gin_numel, grad_columns.numel(), offset.numel()})) {
    HYBRIDOPS_LAUNCH(grid_for(n), kThreads, 0, stream, col2im_scatter_kernel<scalar_t, int32_t, grad_t, AddFn>)(
        g, offset.data_ptr<scalar_t>(), data_or_null<scalar_t>(mask), grad_columns.data_ptr<scalar_t>(), gin, add,
        static_cast<int32_t>(n));
  } else {
    HYBRIDOPS_LAUNCH(grid_for(n), kThreads, 0, stream, col2im_scatter_kernel<scalar_t, int64_t, grad_t, AddFn>)(
        g, offset.data_ptr<scalar_t>(), data_or_null<scalar_t>(mask), grad_columns.data_ptr<scalar_t>(), gin, add, n);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}


struct CudaBackend {
  static void im2col(const Geometry& g, const at::Tensor& input, const at::Tensor& offset,
                     const c10::optional<at::Tensor>& mask, at::Tensor& columns) {
    const int64_t n = g.sample_items();
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_im2col_cuda", [&] {
      if (fits_int32({n, input.numel(), columns.numel(), offset.numel()})) {
        HYBRIDOPS_LAUNCH(grid_for(n), kThreads, 0, stream, im2col_kernel<scalar_t, int32_t>)(
            g, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
            columns.data_ptr<scalar_t>(), static_cast<int32_t>(n));
      } else {
        HYBRIDOPS_LAUNCH(grid_for(n), kThreads, 0, stream, im2col_kernel<scalar_t, int64_t>)(
            g, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
            columns.data_ptr<scalar_t>(), n);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void offset_mask_grad(const Geometry& g, const at::Tensor& input, const at::Tensor& offset,
                               const c10::optional<at::Tensor>& mask, const at::Tensor& grad_columns,
                               at::Tensor& grad_offset, at::Tensor& grad_mask) {
    const int64_t n = g.sample_items();
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_offset_grad_cuda", [&] {
      scalar_t* gmsk = g.use_mask ? grad_mask.data_ptr<scalar_t>() : nullptr;
      if (fits_int32({n, input.numel(), grad_columns.numel(), offset.numel()})) {
        HYBRIDOPS_LAUNCH(grid_for(n), kThreads, 0, stream, offset_mask_grad_kernel<scalar_t, int32_t>)(
            g, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
            grad_columns.data_ptr<scalar_t>(), grad_offset.data_ptr<scalar_t>(), gmsk, static_cast<int32_t>(n));
      } else {
        HYBRIDOPS_LAUNCH(grid_for(n), kThreads, 0, stream, offset_mask_grad_kernel<scalar_t, int64_t>)(
            g, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
            grad_columns.data_ptr<scalar_t>(), grad_offset.data_ptr<scalar_t>(), gmsk, n);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  // Default: atomic float adds. Under torch.use_deterministic_algorithms(True): the same scatter
  // in 64-bit fixed point (FixedPointAdd), whose integer sums do not depend on thread order.
  static void col2im(const Geometry& g, const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                     const at::Tensor& grad_columns, at::Tensor& grad_input) {
    const bool deterministic = at::globalContext().deterministicAlgorithms();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, offset.scalar_type(), "deform_col2im_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (!deterministic) {
        launch_col2im_scatter<scalar_t>(g, offset, mask, grad_columns, grad_input.data_ptr<acc_t>(),
                                        grad_input.numel(), AtomicAdd());
        return;
      }
      col2im_fixed_point(g, mask, grad_columns, grad_input, [&](const FixedPointAdd& add) {
        launch_col2im_scatter<scalar_t>(g, offset, mask, grad_columns, add.base, grad_input.numel(), add);
      });
    });
  }
};

// The fused kernels (issue #16), chosen per call by use_fused (deform_conv2d_fused_plan.h).
#include "deform_conv2d/deform_conv2d_fused_cuda.cuh"
#include "deform_conv2d/deform_conv2d_fused_tc_cuda.cuh"  // and fused_forward_cuda, which picks
#include "deform_conv2d/deform_conv2d_fused_backward_cuda.cuh"  // uses load_pair_corners

at::Tensor deform_conv2d_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  c10::cuda::CUDAGuard guard(input.device());
  // Channels-last tensors stay as they are for the fused kernels; im2col reads NCHW copies.
  const ForwardArgs args =
      forward_args(input, offset, weight, mask, bias, stride, padding, dilation, /*keep_channels_last=*/true);
  at::Tensor fused = fused_forward_cuda(args);
  return fused.defined() ? fused : forward<CudaBackend>(contiguous_args(args)).contiguous(args.out_format);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  c10::cuda::CUDAGuard guard(input.device());
  const BackwardArgs args =
      backward_args(grad_out, input, offset, weight, mask, stride, padding, dilation, /*keep_channels_last=*/true);
  auto fused = fused_backward_cuda(args);
  return fused.has_value() ? *fused : in_result_layouts(backward<CudaBackend>(contiguous_args(args)), args);
}

}  // namespace

HYBRIDOPS_CUDA_IMPL(m) {
  m.impl("deform_conv2d", &deform_conv2d_cuda);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace dcn
}  // namespace hybridops
