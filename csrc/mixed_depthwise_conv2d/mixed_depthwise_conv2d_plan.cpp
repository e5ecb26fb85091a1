// torch.ops.hybridops._mixed_depthwise_conv2d_plan: the CUDA launch plan (mixed_depthwise_conv2d_plan.h)
// for any layer and any shared-memory limit, so the tests check it on machines without a GPU (and
// for GPUs other than the one present). Private (leading underscore): no stability promise.
#include <torch/library.h>

#include <vector>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_driver.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_plan.h"

namespace hybridops {
namespace mdc {
namespace {

// Returns [rows_per_thread, tile_h, tile_w, smem_bytes, grad_weight_chunks] of pass `which`: 0 (forward),
// 1 (grad_input gather) or 2 (grad_weight) for a launch over groups with `kernel_sizes`, an
// accumulation type of `elem_size` bytes (4: fp32/fp16/bf16, 8: fp64) and `smem_limit` bytes per
// block; rows_per_thread == 0 when no tile fits. The chunks (grad_weight only, else 0) are for a
// [batch, channels, out_h, out_w] grad_output.
std::vector<int64_t> plan_op(int64_t which, int64_t elem_size, at::IntArrayRef kernel_sizes, at::IntArrayRef stride,
                             at::IntArrayRef dilation, int64_t smem_limit, int64_t batch, int64_t channels,
                             int64_t out_h, int64_t out_w) {
  TORCH_CHECK(which >= 0 && which <= 2, MDC_OP "_plan: which must be 0, 1 or 2, got ", which);
  TORCH_CHECK(elem_size == 4 || elem_size == 8, MDC_OP "_plan: elem_size must be 4 or 8, got ", elem_size);
  TORCH_CHECK(!kernel_sizes.empty() && static_cast<int64_t>(kernel_sizes.size()) <= kMaxGroups,
              MDC_OP "_plan: kernel_sizes must hold 1 to ", kMaxGroups, " sizes");
  TORCH_CHECK(stride.size() == 2 && dilation.size() == 2 && stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 &&
                  dilation[1] > 0 && stride[0] < kMaxStrideOrReach && stride[1] < kMaxStrideOrReach,
              MDC_OP "_plan: stride and dilation must be pairs of positive ints");
  Geometry g{};
  g.batch = batch;
  g.channels = channels;
  g.out_h = out_h;
  g.out_w = out_w;
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];
  g.num_groups = static_cast<int32_t>(kernel_sizes.size());
  for (size_t i = 0; i < kernel_sizes.size(); ++i) {
    const int64_t k = kernel_sizes[i];
    TORCH_CHECK(k >= 1 && k % 2 == 1 && k <= kMaxKernel && dilation[0] * (k - 1) < kMaxStrideOrReach &&
                    dilation[1] * (k - 1) < kMaxStrideOrReach,
                MDC_OP "_plan: kernel_sizes[", i, "] = ", k, " is not a supported odd kernel size");
    g.kernel[i] = static_cast<int32_t>(k);
    g.max_kernel = std::max<int32_t>(g.max_kernel, static_cast<int32_t>(k));
  }
  const PlanPass p = static_cast<PlanPass>(which);
  const TilePlan plan = plan_pass(p, elem_size, g, smem_limit);
  const int64_t chunks = p == PlanPass::kGradWeight && plan.rows_per_thread > 0
                             ? grad_weight_chunks(batch, out_h, out_w, channels, plan.tile_h, plan.tile_w)
                             : 0;
  return {plan.rows_per_thread, plan.tile_h, plan.tile_w, plan.smem_bytes, chunks};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hybridops, m) {
  m.def("_mixed_depthwise_conv2d_plan(int which, int elem_size, int[] kernel_sizes, int[2] stride, int[2] dilation, "
        "int smem_limit, int batch=1, int channels=1, int out_h=1, int out_w=1) -> int[]",
        &plan_op);
}

}  // namespace mdc
}  // namespace hybridops
