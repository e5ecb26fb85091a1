// Small CUDA kernels with planted bugs, in the same dialect as csrc/**/*.cu (common/cuda_launch.h),
// built for the CPU emulation by tests/test_cuda_emulation_detectors.py to show that each detector
// catches its bug: torch.ops.hybridops_planted.<name>(Tensor x) -> Tensor, x a 1-D float tensor
// whose length is a multiple of kBlock.
//
//   rotate_ok               out[i] = x[block start + (t + 1) % kBlock] through shared memory: correct
//   rotate_missing_barrier  the same without the __syncthreads() between the tile's store and load
//   tile_store_past_end     stores x[i] at tile[t + 1]: the last thread writes one past the tile
//   global_read_past_end    out[i] = x[i + 1]: the last thread reads one past x
//   barrier_in_branch       only the first warp reaches the __syncthreads() (the others exit)
//   shuffle_outside_mask    every lane shuffles with a mask naming only lanes 0-15
//   block_too_large         a launch of 2048 threads per block
//   smem_over_default       64 KiB of dynamic shared memory without cudaFuncSetAttribute
//   smem_opt_in             the same after cudaFuncSetAttribute (fine where the device allows it)
//   rotate_static_shared    rotate_ok through a static __shared__ array instead of dynamic memory
//   ballot                  out[i] = the number of odd values in i's warp (__ballot_sync)
//                           + 1000 * __any_sync(x > 1000) + 2000 * __all_sync(x >= 0)
//   wmma_ok                 (one block of 2 warps) out[:256] = X @ X with X = x[:256] as a 16x16 fp16
//                           matrix, by nvcuda::wmma 16x16x16 (warp 0; warp 1 idles); out[256:] = 0
//   wmma_misaligned         the same with the A tile read from 2 bytes past a 256-bit boundary
//   wmma_divergent          the same with the B tile loaded by lanes 0-15 of the warp only
//   wmma_lane_pointer       the same with the B tile's pointer depending on the lane
#include <torch/library.h>

#include <ATen/ATen.h>

#include "common/cuda_launch.h"
#include "common/cuda_wmma.h"

namespace {

constexpr int kBlock = 64;

__global__ void rotate_kernel(const float* x, float* out, bool barrier) {
  HYBRIDOPS_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x;
  const int base = blockIdx.x * kBlock;
  tile[t] = x[base + t];
  if (barrier) __syncthreads();
  out[base + t] = tile[(t + 1) % kBlock];
}

__global__ void rotate_static_shared_kernel(const float* x, float* out) {
  __shared__ float tile[kBlock];
  const int t = threadIdx.x;
  const int base = blockIdx.x * kBlock;
  tile[t] = x[base + t];
  __syncthreads();
  out[base + t] = tile[(t + 1) % kBlock];
}

__global__ void ballot_kernel(const float* x, float* out) {
  const int i = blockIdx.x * kBlock + threadIdx.x;
  const int odd = static_cast<int>(x[i]) % 2;
  const unsigned bits = __ballot_sync(0xffffffffu, odd);
  int count = 0;
  for (int l = 0; l < 32; ++l) count += (bits >> l) & 1u;
  const int any = __any_sync(0xffffffffu, x[i] > 1000.0f);  // no element is: 0
  const int all = __all_sync(0xffffffffu, x[i] >= 0.0f);    // every element is: 1
  out[i] = static_cast<float>(count + 1000 * any + 2000 * all);
}

__global__ void tile_store_past_end_kernel(const float* x, float* out) {
  HYBRIDOPS_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x;
  const int base = blockIdx.x * kBlock;
  tile[t + 1] = x[base + t];  // planted: off by one
  __syncthreads();
  out[base + t] = tile[t];
}

__global__ void global_read_past_end_kernel(const float* x, float* out) {
  const int i = blockIdx.x * kBlock + threadIdx.x;
  out[i] = x[i + 1];  // planted: reads x[n] in the last thread
}

__global__ void barrier_in_branch_kernel(const float* x, float* out) {
  const int i = blockIdx.x * kBlock + threadIdx.x;
  if (threadIdx.x < 32) __syncthreads();  // planted: the second warp never arrives
  out[i] = x[i];
}

__global__ void shuffle_kernel(const float* x, float* out, unsigned mask) {
  const int i = blockIdx.x * kBlock + threadIdx.x;
  out[i] = __shfl_down_sync(mask, x[i], 1);
}

enum class WmmaBug { kNone, kMisaligned, kDivergent, kLanePointer };

__global__ void wmma_kernel(const float* x, float* out, WmmaBug bug) {
  namespace wmma = nvcuda::wmma;
  using half_t = hybridops::WmmaElement<c10::Half>::type;
  HYBRIDOPS_DYNAMIC_SHARED(unsigned char, smem);
  c10::Half* a = reinterpret_cast<c10::Half*>(smem);  // [16 + 16][16]: X, then one spare row block
  float* d = reinterpret_cast<float*>(smem + 32 * 16 * sizeof(c10::Half));  // [16][16]
  for (int i = threadIdx.x; i < 256; i += blockDim.x) a[i] = static_cast<c10::Half>(x[i]);
  __syncthreads();
  if (threadIdx.x < 32) {  // warp 0
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half_t, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, half_t, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    const c10::Half* a_tile = bug == WmmaBug::kMisaligned ? a + 1 : a;  // planted: 2 bytes off
    wmma::load_matrix_sync(fa, reinterpret_cast<const half_t*>(a_tile), 16);
    if (bug != WmmaBug::kDivergent || threadIdx.x < 16) {  // planted: half the warp
      const c10::Half* b_tile = bug == WmmaBug::kLanePointer ? a + (threadIdx.x % 2) * 256 : a;  // planted
      wmma::load_matrix_sync(fb, reinterpret_cast<const half_t*>(b_tile), 16);
    }
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 256; i += blockDim.x) out[i] = d[i];
}

at::Tensor launch(const at::Tensor& x, const char* which) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kFloat && x.numel() % kBlock == 0 && x.is_contiguous(),
              "planted bugs: x must be a contiguous 1-D float tensor of a multiple of ", kBlock, " elements");
  at::Tensor out = at::zeros_like(x);
  const auto blocks = static_cast<unsigned>(x.numel() / kBlock);
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  auto stream = at::cuda::getCurrentCUDAStream();
  const std::string w = which;
  const size_t tile_bytes = kBlock * sizeof(float);
  if (w == "rotate_ok" || w == "rotate_missing_barrier") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, tile_bytes, stream, rotate_kernel)(in, o, w == "rotate_ok");
  } else if (w == "rotate_static_shared") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, 0, stream, rotate_static_shared_kernel)(in, o);
  } else if (w == "ballot") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, 0, stream, ballot_kernel)(in, o);
  } else if (w == "tile_store_past_end") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, tile_bytes, stream, tile_store_past_end_kernel)(in, o);
  } else if (w == "global_read_past_end") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, 0, stream, global_read_past_end_kernel)(in, o);
  } else if (w == "barrier_in_branch") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, 0, stream, barrier_in_branch_kernel)(in, o);
  } else if (w == "shuffle_ok") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, 0, stream, shuffle_kernel)(in, o, 0xffffffffu);
  } else if (w == "shuffle_outside_mask") {
    HYBRIDOPS_LAUNCH(blocks, kBlock, 0, stream, shuffle_kernel)(in, o, 0x0000ffffu);
  } else if (w == "wmma_ok" || w == "wmma_misaligned" || w == "wmma_divergent" || w == "wmma_lane_pointer") {
    const WmmaBug bug = w == "wmma_ok"           ? WmmaBug::kNone
                        : w == "wmma_misaligned" ? WmmaBug::kMisaligned
                        : w == "wmma_divergent"  ? WmmaBug::kDivergent
                                                 : WmmaBug::kLanePointer;
    const size_t bytes = 32 * 16 * sizeof(c10::Half) + 256 * sizeof(float);
    HYBRIDOPS_LAUNCH(1, kBlock, bytes, stream, wmma_kernel)(in, o, bug);
  } else if (w == "block_too_large") {
    HYBRIDOPS_LAUNCH(blocks, 2048, 0, stream, global_read_past_end_kernel)(in, o);
  } else if (w == "smem_over_default" || w == "smem_opt_in") {
    const int bytes = 64 * 1024;
    if (w == "smem_opt_in") {  // (a kernel of its own: the attribute stays set for the process)
      C10_CUDA_CHECK(cudaFuncSetAttribute(shuffle_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
      HYBRIDOPS_LAUNCH(blocks, kBlock, bytes, stream, shuffle_kernel)(in, o, 0xffffffffu);
    } else {
      HYBRIDOPS_LAUNCH(blocks, kBlock, bytes, stream, rotate_kernel)(in, o, true);
    }
  } else {
    TORCH_CHECK(false, "planted bugs: unknown kernel ", which);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY(hybridops_planted, m) {
  m.def("run(Tensor x, str which) -> Tensor",
        [](const at::Tensor& x, c10::string_view which) { return launch(x, std::string(which).c_str()); });
}
