// CUDA implementation of mixed_depthwise_conv2d: the shared bodies (mixed_depthwise_conv2d_kernel.h)
// over shared-memory tiles. One launch per pass whatever the number of groups: a block works on
// one channel, so its kernel size is uniform, and a switch on it picks the body unrolled for
// k in {3, 5, 7, 9} (a run-time loop otherwise). Tile heights and grad_weight chunks come from the
// pure host plans in mixed_depthwise_conv2d_plan.h (shared with the CPU emulation and the tests).
//
//   forward      one block per (image, channel, tile of 32 x 32 down to 8 x 8 outputs: the largest
//                whose shared memory fits the device): the input tile with its halo (and the
//                channel's taps) go to shared memory in float/double, padded and phase-split by the
//                stride, then each thread computes up to 4 outputs of a column.
//   grad_input   stride 1: the forward kernel on grad_output with the flipped taps. Stride > 1: a
//                gather, one thread per input pixel summing the grad_output pixels that read it,
//                from a shared-memory tile of grad_output. No atomics.
//   grad_weight  per channel, the (image, tile) items are dealt to a shape-determined number of
//                chunks; blocks (chunk stride gridDim.x, channel) load input and grad_output tiles
//                to shared memory, each warp owns some taps and reduces its dot products with
//                shuffles in a fixed order, partial sums per chunk go to a buffer, and a second
//                small kernel sums them per (channel, tap) in chunk order. Deterministic and the
//                same bits on every GPU (tile and chunks never depend on the device), and the
//                number of blocks does not depend on the batch size, so batch 1 fills the GPU.
//
// Portable to sm_61: no tensor cores, no half atomics (no atomics at all), warp shuffles with
// explicit masks only. fp16/bf16 are loaded and stored in their storage type and accumulated in
// float.
//
// The same text also compiles for the CPU emulation of CUDA (common/cuda_launch.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "common/cuda_launch.h"

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_driver.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_plan.h"

namespace hybridops {
namespace mdc {
namespace {

// Tiling constants (kTX, kTY, kTileW, ...), the tile geometry and the per-thread bodies live in
// mixed_depthwise_conv2d_kernel.h, the launch plans (tile height from the device's shared memory,
// grad_weight chunks) in mixed_depthwise_conv2d_plan.h: both shared with the CPU emulation.

template <typename acc_t>
__device__ __forceinline__ acc_t* smem_as() {
  HYBRIDOPS_DYNAMIC_SHARED(unsigned char, smem_raw);
  return reinterpret_cast<acc_t*>(smem_raw);
}

__device__ __forceinline__ int thread_rank() { return threadIdx.y * kTX + threadIdx.x; }

// ---- forward (also grad_input at stride 1 with flipped taps) -----------------------------------
// in: [N, C, H, W] -> out: [N, C, Ho, Wo] with timm's padding; `flip` reverses each channel's taps.
// The block's tile is rpt * kTY x tile_w outputs (from the plan); threads tx >= tile_w only load.
template <int K, int SW, typename scalar_t, typename acc_t>
__device__ __forceinline__ void forward_block(const Geometry& g, int k, const scalar_t* __restrict__ plane,
                                              scalar_t* __restrict__ out_plane, acc_t bias, int64_t H, int64_t W,
                                              int64_t Ho, int64_t Wo, int ho0, int wo0, int rpt, int tile_w,
                                              const acc_t* __restrict__ w, acc_t* __restrict__ tile) {
  const int sh = static_cast<int>(g.stride_h), sw = SW > 0 ? SW : static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  const SmemTile t = smem_tile(rpt * kTY, tile_w, sh, sw, dh, dw, k);
  const int64_t ph = g.pad_h(k), pw = g.pad_w(k);
  load_tile_part(plane, H, W, int64_t(ho0) * sh - ph, int64_t(wo0) * sw - pw, t, sw, tile, thread_rank(), kThreads);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) >= tile_w) return;  // no barrier follows
  acc_t acc[kRowsPerThread][1];
#pragma unroll
  for (int u = 0; u < kRowsPerThread; ++u) acc[u][0] = bias;
  forward_thread_rows<K>(tile, t, sh, sw, dh, dw, k, w, threadIdx.x, threadIdx.y, rpt, acc);
  const int wo = wo0 + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kRowsPerThread; ++u) {
    const int ho = ho0 + threadIdx.y + u * kTY;
    if (u < rpt && ho < Ho && wo < Wo) out_plane[int64_t(ho) * Wo + wo] = static_cast<scalar_t>(acc[u][0]);
  }
}

template <int SW, typename scalar_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(Geometry g, GroupPointers<const scalar_t> weights,
                                                           const scalar_t* __restrict__ in,
                                                           const scalar_t* __restrict__ bias,
                                                           scalar_t* __restrict__ out, int64_t H, int64_t W,
                                                           int64_t Ho, int64_t Wo, int tiles_w, int tiles, int rpt,
                                                           int tile_w, bool flip) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane_idx = blockIdx.x / tiles;
  const int tile_idx = static_cast<int>(blockIdx.x - plane_idx * tiles);
  const int ho0 = (tile_idx / tiles_w) * rpt * kTY, wo0 = (tile_idx % tiles_w) * tile_w;
  const int64_t c = plane_idx % g.channels;
  const int gi = g.group_of(c);
  const int k = g.kernel[gi];
  acc_t* w = smem_as<acc_t>();
  acc_t* tile = w + k * k;
  load_taps_part(weights.ptr[gi] + (c - g.group_begin[gi]) * k * k, k, flip, w, thread_rank(), kThreads);
  const acc_t b = bias ? static_cast<acc_t>(bias[c]) : acc_t(0);
  const scalar_t* plane = in + plane_idx * H * W;
  scalar_t* out_plane = out + plane_idx * Ho * Wo;
  switch (k) {  // uniform per block
    case 3: forward_block<3, SW>(g, k, plane, out_plane, b, H, W, Ho, Wo, ho0, wo0, rpt, tile_w, w, tile); break;
    case 5: forward_block<5, SW>(g, k, plane, out_plane, b, H, W, Ho, Wo, ho0, wo0, rpt, tile_w, w, tile); break;
    case 7: forward_block<7, SW>(g, k, plane, out_plane, b, H, W, Ho, Wo, ho0, wo0, rpt, tile_w, w, tile); break;
    case 9: forward_block<9, SW>(g, k, plane, out_plane, b, H, W, Ho, Wo, ho0, wo0, rpt, tile_w, w, tile); break;
    default: forward_block<0, SW>(g, k, plane, out_plane, b, H, W, Ho, Wo, ho0, wo0, rpt, tile_w, w, tile); break;
  }
}

// ---- grad_input for stride > 1: gather --------------------------------------------------------
template <int K, typename scalar_t, typename acc_t>
__device__ __forceinline__ void grad_input_gather_block(const Geometry& g, int k, const scalar_t* __restrict__ gplane,
                                                        scalar_t* __restrict__ gin_plane, int h0, int x0, int rpt,
                                                        int tile_w, const acc_t* __restrict__ w,
                                                        acc_t* __restrict__ tile) {
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  const int ph = static_cast<int>(g.pad_h(k)), pw = static_cast<int>(g.pad_w(k));
  const GatherWindow gw = gather_window(h0, x0, sh, sw, dh, dw, k, rpt * kTY, tile_w);
  load_gather_part(gplane, g.out_h, g.out_w, gw, tile, thread_rank(), kThreads);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) >= tile_w) return;  // no barrier follows
  const int x = x0 + threadIdx.x;
  for (int u = 0; u < rpt; ++u) {
    const int h = h0 + threadIdx.y + u * kTY;
    const acc_t v = grad_input_gather<K, acc_t>(tile, gw.cols, gw.ho_lo, gw.wo_lo, gw.rows, gw.cols, sh, sw, dh, dw,
                                                ph, pw, k, w, h, x);
    if (h < g.height && x < g.width) gin_plane[int64_t(h) * g.width + x] = static_cast<scalar_t>(v);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) grad_input_gather_kernel(Geometry g, GroupPointers<const scalar_t> weights,
                                                                     const scalar_t* __restrict__ grad_out,
                                                                     scalar_t* __restrict__ grad_in, int tiles_w,
                                                                     int tiles, int rpt, int tile_w) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t plane_idx = blockIdx.x / tiles;
  const int tile_idx = static_cast<int>(blockIdx.x - plane_idx * tiles);
  const int h0 = (tile_idx / tiles_w) * rpt * kTY, x0 = (tile_idx % tiles_w) * tile_w;
  const int64_t c = plane_idx % g.channels;
  const int gi = g.group_of(c);
  const int k = g.kernel[gi];
  acc_t* w = smem_as<acc_t>();
  acc_t* tile = w + k * k;
  load_taps_part(weights.ptr[gi] + (c - g.group_begin[gi]) * k * k, k, false, w, thread_rank(), kThreads);
  const scalar_t* gplane = grad_out + plane_idx * g.out_h * g.out_w;
  scalar_t* gin_plane = grad_in + plane_idx * g.height * g.width;
  switch (k) {
    case 3: grad_input_gather_block<3>(g, k, gplane, gin_plane, h0, x0, rpt, tile_w, w, tile); break;
    case 5: grad_input_gather_block<5>(g, k, gplane, gin_plane, h0, x0, rpt, tile_w, w, tile); break;
    case 7: grad_input_gather_block<7>(g, k, gplane, gin_plane, h0, x0, rpt, tile_w, w, tile); break;
    case 9: grad_input_gather_block<9>(g, k, gplane, gin_plane, h0, x0, rpt, tile_w, w, tile); break;
    default: grad_input_gather_block<0>(g, k, gplane, gin_plane, h0, x0, rpt, tile_w, w, tile); break;
  }
}

// ---- grad_weight: per-chunk partial sums, then a fixed-order reduction ------------------------
// Chunk `chunk` of channel c sums items chunk, chunk + chunks, ... of the channel's (image, tile)
// items and writes its k*k partial sums to partials[c][chunk][0, k*k). Block (bx, c) computes
// chunks bx, bx + gridDim.x, ...: the grid size (from the SM count) never changes a chunk's sum.
// Warp w owns taps w, w + kWarps, ...
template <int SW, typename scalar_t>
__global__ void __launch_bounds__(kThreads) grad_weight_partial_kernel(Geometry g, const scalar_t* __restrict__ in,
                                                                       const scalar_t* __restrict__ grad_out,
                                                                       at::opmath_type<scalar_t>* __restrict__ partials,
                                                                       int tiles_w, int tiles, int tile_h, int tile_w,
                                                                       int chunks, int max_taps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t c = blockIdx.y;
  const int gi = g.group_of(c);
  const int k = g.kernel[gi];
  const int kk = k * k;
  const int sh = static_cast<int>(g.stride_h), sw = SW > 0 ? SW : static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  const int64_t ph = g.pad_h(k), pw = g.pad_w(k);
  const SmemTile t = smem_tile(tile_h, tile_w, sh, sw, dh, dw, k);
  acc_t* tile = smem_as<acc_t>();
  acc_t* gtile = tile + t.rows * t.row_stride;
  acc_t* part = gtile + tile_h * kTileW;  // [kk]; entry t is updated only by lane 0 of warp t % kWarps
  const int tid = thread_rank();
  const int warp = tid / 32, lane = tid % 32;
  const int64_t H = g.height, W = g.width, Ho = g.out_h, Wo = g.out_w;
  const int64_t items = g.batch * tiles;
  for (int chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    __syncthreads();  // the previous chunk's partial sums are written out
    for (int i = tid; i < kk; i += kThreads) part[i] = 0;
    for (int64_t item = chunk; item < items; item += chunks) {
      const int64_t n = item / tiles;
      const int tile_idx = static_cast<int>(item - n * tiles);
      const int ho0 = (tile_idx / tiles_w) * tile_h, wo0 = (tile_idx % tiles_w) * tile_w;
      const int64_t plane_idx = n * g.channels + c;
      __syncthreads();  // the previous item's tiles are fully consumed (and part[] is initialised)
      load_tile_part(in + plane_idx * H * W, H, W, int64_t(ho0) * sh - ph, int64_t(wo0) * sw - pw, t, sw, tile, tid,
                     kThreads);
      load_gout_tile_part(grad_out + plane_idx * Ho * Wo, Ho, Wo, ho0, wo0, tile_h, tile_w, gtile, tid, kThreads);
      __syncthreads();
      for (int tap = warp; tap < kk; tap += kWarps) {
        acc_t v = tap_lane_partial(tile, t, gtile, tile_h, tile_w, sh, sw, dh, dw, k, tap, lane);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) part[tap] += v;
      }
    }
    __syncthreads();
    acc_t* dst = partials + (c * chunks + chunk) * max_taps;
    for (int i = tid; i < kk; i += kThreads) dst[i] = part[i];
  }
}

template <typename scalar_t>
__global__ void grad_weight_reduce_kernel(Geometry g, const at::opmath_type<scalar_t>* __restrict__ partials,
                                          GroupPointers<scalar_t> grad_w, int chunks, int max_taps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= g.channels * int64_t(max_taps)) return;
  const int64_t c = idx / max_taps;
  const int tap = static_cast<int>(idx - c * max_taps);
  const int gi = g.group_of(c);
  const int k = g.kernel[gi];
  if (tap >= k * k) return;
  const acc_t* p = partials + c * chunks * max_taps + tap;
  acc_t sum = 0;
  for (int ch = 0; ch < chunks; ++ch) sum += p[int64_t(ch) * max_taps];
  grad_w.ptr[gi][(c - g.group_begin[gi]) * k * k + tap] = static_cast<scalar_t>(sum);
}

// ---- launchers ---------------------------------------------------------------------------------
// Shared memory a block of this device may use: the opt-in limit where there is one (Volta and
// newer: 96-227 KiB), else the default 48 KiB (Pascal cannot opt in to more).
inline int64_t device_smem_limit() {
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  return std::max<int64_t>(static_cast<int64_t>(prop->sharedMemPerBlockOptin),
                           static_cast<int64_t>(prop->sharedMemPerBlock));
}

// The tile plan of `pass` on this device, or a clear error when not even the smallest tile fits.
inline TilePlan device_plan(PlanPass pass, int64_t elem_size, const Geometry& g, const char* what) {
  const int64_t limit = device_smem_limit();
  const TilePlan plan = plan_pass(pass, elem_size, g, limit);
  TORCH_CHECK(plan.rows_per_thread > 0, MDC_OP ": the ", what, " tile needs ",
              smem_bytes(pass, elem_size, g.max_kernel, static_cast<int>(g.stride_h), static_cast<int>(g.stride_w),
                         static_cast<int>(g.dil_h), static_cast<int>(g.dil_w), kTY, 8),
              " bytes of shared memory even at its smallest (8 x 8 outputs), but this GPU allows ", limit,
              " per block: dilation * (kernel_size - 1) is too large for the CUDA kernels (the CPU kernels "
              "have no such limit)");
  return plan;
}

// Dynamic shared memory for `bytes`: raises the per-kernel limit above 48 KiB when the plan needs it.
template <typename Kernel>
void prepare_smem(Kernel kernel, int64_t bytes) {
  if (bytes > kPortableSmemBytes) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

template <typename scalar_t>
GroupPointers<const scalar_t> weight_pointers(const Geometry& g, const std::vector<at::Tensor>& weights) {
  GroupPointers<const scalar_t> wp{};
  for (int i = 0; i < g.num_groups; ++i) wp.ptr[i] = weights[i].data_ptr<scalar_t>();
  return wp;
}

// Runs the forward kernel: in [N, C, H, W] -> out [N, C, Ho, Wo] (g describes the problem).
template <typename scalar_t>
void launch_forward(const Geometry& g, const GroupPointers<const scalar_t>& wp, const scalar_t* in,
                    const scalar_t* bias, scalar_t* out, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool flip) {
  using acc_t = at::opmath_type<scalar_t>;
  const TilePlan plan = device_plan(PlanPass::kForward, sizeof(acc_t), g, "forward");
  const int64_t tiles_w = ceil_div(Wo, plan.tile_w), tiles_h = ceil_div(Ho, plan.tile_h);
  const int64_t tiles = tiles_w * tiles_h;
  const int64_t blocks = g.batch * g.channels * tiles;
  TORCH_CHECK(blocks < (int64_t(1) << 31) && tiles < (int64_t(1) << 30), MDC_OP ": problem too large for one launch");
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kTX, kTY);
  auto go = [&](auto kernel) {
    prepare_smem(kernel, plan.smem_bytes);
    HYBRIDOPS_LAUNCH(static_cast<unsigned>(blocks), block, plan.smem_bytes, stream, kernel)(
        g, wp, in, bias, out, H, W, Ho, Wo, static_cast<int>(tiles_w), static_cast<int>(tiles), plan.rows_per_thread,
        plan.tile_w, flip);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (g.stride_w == 1) {
    go(forward_kernel<1, scalar_t>);
  } else if (g.stride_w == 2) {
    go(forward_kernel<2, scalar_t>);
  } else {
    go(forward_kernel<0, scalar_t>);
  }
}

at::Tensor forward_cuda(const at::Tensor& input_, at::TensorList weights_, const c10::optional<at::Tensor>& bias_,
                        at::IntArrayRef stride, at::IntArrayRef dilation) {
  c10::cuda::CUDAGuard guard(input_.device());
  const Geometry g = make_geometry(input_, weights_, stride, dilation);
  check_bias(bias_, input_);
  const at::Tensor input = input_.contiguous();
  const std::vector<at::Tensor> weights = contiguous_all(weights_);
  const bool use_bias = bias_.has_value() && bias_->defined();
  const at::Tensor bias = use_bias ? bias_->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, input.options());
  if (out.numel() == 0) return in_layout_of(out, input_);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_cuda", [&] {
    launch_forward<scalar_t>(g, weight_pointers<scalar_t>(g, weights), input.data_ptr<scalar_t>(),
                             use_bias ? bias.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), g.height,
                             g.width, g.out_h, g.out_w, false);
  });
  return in_layout_of(out, input_);  // channels-last in, channels-last out (NCHW kernels)
}

std::tuple<at::Tensor, std::vector<at::Tensor>> backward_cuda(const at::Tensor& grad_out_, const at::Tensor& input_,
                                                              at::TensorList weights_, at::IntArrayRef stride,
                                                              at::IntArrayRef dilation,
                                                              std::array<bool, 2> output_mask) {
  c10::cuda::CUDAGuard guard(input_.device());
  const Geometry g = make_geometry(input_, weights_, stride, dilation);
  check_grad_output(grad_out_, g, input_);
  const at::Tensor input = input_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous();
  const std::vector<at::Tensor> weights = contiguous_all(weights_);
  at::Tensor grad_input = output_mask[0] ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
  std::vector<at::Tensor> grad_weights;
  if (output_mask[1]) {
    for (const auto& w : weights) grad_weights.push_back(at::empty(w.sizes(), w.options()));
  }
  const bool empty_planes = g.batch == 0 || g.out_h == 0 || g.out_w == 0;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mixed_depthwise_conv2d_backward_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const GroupPointers<const scalar_t> wp = weight_pointers<scalar_t>(g, weights);
    if (output_mask[0] && grad_input.numel() > 0) {
      if (g.stride_h == 1 && g.stride_w == 1) {
        launch_forward<scalar_t>(g, wp, grad_out.data_ptr<scalar_t>(), nullptr, grad_input.data_ptr<scalar_t>(),
                                 g.out_h, g.out_w, g.height, g.width, true);
      } else {
        const TilePlan plan = device_plan(PlanPass::kGradInputGather, sizeof(acc_t), g, "grad_input");
        const int64_t tiles_w = ceil_div(g.width, plan.tile_w), tiles = tiles_w * ceil_div(g.height, plan.tile_h);
        const int64_t blocks = g.batch * g.channels * tiles;
        TORCH_CHECK(blocks < (int64_t(1) << 31), MDC_OP ": problem too large for one launch");
        prepare_smem(grad_input_gather_kernel<scalar_t>, plan.smem_bytes);
        HYBRIDOPS_LAUNCH(static_cast<unsigned>(blocks), dim3(kTX, kTY), plan.smem_bytes, stream,
                         grad_input_gather_kernel<scalar_t>)(
            g, wp, grad_out.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(), static_cast<int>(tiles_w),
            static_cast<int>(tiles), plan.rows_per_thread, plan.tile_w);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (output_mask[1]) {
      GroupPointers<scalar_t> gwp{};
      for (int i = 0; i < g.num_groups; ++i) gwp.ptr[i] = grad_weights[i].data_ptr<scalar_t>();
      if (empty_planes) {
        for (auto& gw : grad_weights) gw.zero_();
        return;
      }
      // Tile and chunks from the shapes only (see mixed_depthwise_conv2d_plan.h): the same summation
      // order, hence the same bits, on every GPU. The SM count only sizes the grid.
      const TilePlan plan = device_plan(PlanPass::kGradWeight, sizeof(acc_t), g, "grad_weight");
      const int64_t tiles_w = ceil_div(g.out_w, plan.tile_w), tiles = tiles_w * ceil_div(g.out_h, plan.tile_h);
      const int64_t chunks = grad_weight_chunks(g.batch, g.out_h, g.out_w, g.channels, plan.tile_h, plan.tile_w);
      const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
      const int64_t grid_x = capped_grid_blocks(grad_weight_grid_x(chunks, g.channels, sms));
      TORCH_CHECK(g.channels <= 65535, MDC_OP ": at most 65535 channels are supported on CUDA, got ", g.channels);
      TORCH_CHECK(tiles < (int64_t(1) << 30), MDC_OP ": problem too large for one launch");
      const int max_taps = g.max_kernel * g.max_kernel;
      at::Tensor partials = at::empty({g.channels * chunks * max_taps}, input.options().dtype(
                                                                             c10::CppTypeToScalarType<acc_t>::value));
      const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(g.channels));
      auto go = [&](auto kernel) {
        prepare_smem(kernel, plan.smem_bytes);
        HYBRIDOPS_LAUNCH(grid, dim3(kTX, kTY), plan.smem_bytes, stream, kernel)(
            g, input.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), partials.data_ptr<acc_t>(),
            static_cast<int>(tiles_w), static_cast<int>(tiles), plan.tile_h, plan.tile_w, static_cast<int>(chunks),
            max_taps);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (g.stride_w == 1) {
        go(grad_weight_partial_kernel<1, scalar_t>);
      } else if (g.stride_w == 2) {
        go(grad_weight_partial_kernel<2, scalar_t>);
      } else {
        go(grad_weight_partial_kernel<0, scalar_t>);
      }
      const int64_t n = g.channels * max_taps;
      HYBRIDOPS_LAUNCH(static_cast<unsigned>(ceil_div(n, 256)), 256, 0, stream, grad_weight_reduce_kernel<scalar_t>)(
          g, partials.data_ptr<acc_t>(), gwp, static_cast<int>(chunks), max_taps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {output_mask[0] ? in_layout_of(grad_input, input_) : grad_input, grad_weights};
}

}  // namespace

HYBRIDOPS_CUDA_IMPL(m) {
  m.impl("mixed_depthwise_conv2d", &forward_cuda);
  m.impl("mixed_depthwise_conv2d_backward", &backward_cuda);
}

}  // namespace mdc
}  // namespace hybridops
