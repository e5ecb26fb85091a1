// Per-element math of the mixed-kernel depthwise convolution (MixConv), shared by the CPU and
// CUDA kernels.
//
// The channels are split into groups [group_begin[g], group_begin[g+1]); group g uses a square odd
// kernel of size k_g with "same" padding p = dilation * (k_g - 1) / 2, so every group has the same
// output size  H_out = ceil(H / stride_h), W_out = ceil(W / stride_w).
//
// All bodies below work on a *padded tile*: a float (double for double) copy of a region of one
// channel plane with its zero halo already in place, so the inner loops have no bounds checks and
// read/accumulate in the accumulation type whatever the storage dtype. The CPU uses one tile per
// whole plane, the GPU a shared-memory tile per block. Columns of a tile row are stored
// *phase-split* by the horizontal stride s: padded column x lives at
//     row * row_stride + (x % s) * phase_len + x / s,
// so the s-strided reads of consecutive outputs (x = wo * s + j * d) are contiguous in memory
// (for s = 1 this is the plain row-major layout). That keeps stride-2 loops vectorisable on the
// CPU and bank-conflict free on the GPU.
#pragma once

#include <cstdint>

#include "common/host_device.h"

// Forced inlining also on the host: the CPU launcher compiles the bodies into ISA-specific clones
// (AVX2 / AVX-512), which only works when they are inlined into the clone.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MDC_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define MDC_INLINE inline __attribute__((always_inline))
#else
#define MDC_INLINE inline
#endif

namespace hybridops {
namespace mdc {

// Groups per op call: the group table travels by value as a kernel argument.
constexpr int kMaxGroups = 32;

struct Geometry {
  int64_t batch, channels, height, width;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w;
  int64_t dil_h, dil_w;
  int32_t num_groups;
  int32_t max_kernel;
  int32_t group_begin[kMaxGroups + 1];  // first channel of each group; group_begin[num_groups] == channels
  int32_t kernel[kMaxGroups];           // kernel size of each group (odd, >= 1)

  // The group of channel c (a short linear scan: there are only a few groups).
  HOST_DEVICE_INLINE int group_of(int64_t c) const {
    int g = 0;
    while (g + 1 < num_groups && c >= group_begin[g + 1]) ++g;
    return g;
  }
  HOST_DEVICE_INLINE int64_t pad_h(int k) const { return dil_h * (k - 1) / 2; }
  HOST_DEVICE_INLINE int64_t pad_w(int k) const { return dil_w * (k - 1) / 2; }
};

// Per-group pointers (weights or their gradients), by value into kernels.
template <typename T>
struct GroupPointers {
  T* ptr[kMaxGroups];
};

// ----------------------------------------------------------------------------------------------
// Forward (and grad_input at stride 1): V outputs of one row, spaced VS apart, from a padded tile.
//   src   : the tile element at padded row ho * stride_h, phase 0, column index of the first output
//           (output wo reads padded columns wo * s + j * d, i.e. phase (j*d) % s, index wo + (j*d)/s)
//   w     : the k*k taps of the channel, row-major, in the accumulation type
//   acc   : V accumulators (pre-loaded with the bias), updated in place.
// K > 0 is the kernel size known at compile time (fully unrolled); K == 0 reads it from k.
// ----------------------------------------------------------------------------------------------
template <int K, int V, int VS, typename acc_t, typename index_t>
MDC_INLINE void conv_run(const acc_t* __restrict__ src, index_t row_stride, index_t phase_len, int sw, int dh,
                         int dw, int k_runtime, const acc_t* __restrict__ w, acc_t (&acc)[V]) {
  const int k = K > 0 ? K : k_runtime;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < k; ++i) {
    const acc_t* row = src + static_cast<index_t>(i * dh) * row_stride;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 0; j < k; ++j) {
      const int x = j * dw;
      const acc_t* s = row + static_cast<index_t>(x % sw) * phase_len + x / sw;
      const acc_t wv = w[i * k + j];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int v = 0; v < V; ++v) acc[v] += wv * s[v * VS];
    }
  }
}

// grad_input for stride > 1 (CPU form): scatter the n outputs of row ho of grad_output into a
// padded, phase-split float tile of grad_input, the exact adjoint of conv_run:
//   tile[ho*s_h + i*d_h][wo*s_w + j*d_w] += w[i, j] * grad_out[ho, wo].
// `dst` is the tile element at padded row ho * stride_h, phase 0, index 0. The caller owns the whole
// tile (one plane per worker), so the scatter is race-free and its order fixed: deterministic.
template <int K, typename acc_t, typename index_t>
MDC_INLINE void scatter_row(acc_t* __restrict__ dst, index_t row_stride, index_t phase_len, int sw, int dh, int dw,
                            int k_runtime, const acc_t* __restrict__ w, const acc_t* __restrict__ g, index_t n) {
  const int k = K > 0 ? K : k_runtime;
  for (int i = 0; i < k; ++i) {
    acc_t* row = dst + static_cast<index_t>(i * dh) * row_stride;
    for (int j = 0; j < k; ++j) {
      const int x = j * dw;
      acc_t* d = row + static_cast<index_t>(x % sw) * phase_len + x / sw;
      const acc_t wv = w[i * k + j];
      for (index_t t = 0; t < n; ++t) d[t] += wv * g[t];
    }
  }
}

// grad_input for any stride (GPU form, a gather: one thread owns each input pixel, no atomics):
//   grad_in[h, w] = sum_{i, j} w[i, j] * grad_out[(h + p_h - i*d_h) / s_h, (w + p_w - j*d_w) / s_w]
// over the taps whose numerators are divisible by the stride and land inside grad_out. `gout` is a
// tile of grad_output with row stride `ld`, covering output rows [ho0, ho0 + rows) and columns
// [wo0, wo0 + cols); taps outside that window must be zero (the caller's tile holds a zero halo, so
// the window test below only guards the stride divisibility and the tile edge).
template <int K, typename acc_t>
MDC_INLINE acc_t grad_input_gather(const acc_t* __restrict__ gout, int ld, int ho0, int wo0, int rows, int cols,
                                   int sh, int sw, int dh, int dw, int ph, int pw, int k_runtime,
                                   const acc_t* __restrict__ w, int h, int wcol) {
  const int k = K > 0 ? K : k_runtime;
  acc_t sum = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < k; ++i) {
    const int yn = h + ph - i * dh;
    if (yn < 0 || yn % sh != 0) continue;
    const int ho = yn / sh - ho0;
    if (ho < 0 || ho >= rows) continue;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 0; j < k; ++j) {
      const int xn = wcol + pw - j * dw;
      if (xn < 0 || xn % sw != 0) continue;
      const int wo = xn / sw - wo0;
      if (wo < 0 || wo >= cols) continue;
      sum += w[i * k + j] * gout[ho * ld + wo];
    }
  }
  return sum;
}

// grad_weight partial sums: acc[v] += g[v*VS] * s[v*VS] (one tap, V outputs).
template <int V, int VS, typename acc_t>
MDC_INLINE void tap_dot_run(const acc_t* __restrict__ g, const acc_t* __restrict__ s, acc_t (&acc)[V]) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int v = 0; v < V; ++v) acc[v] += g[v * VS] * s[v * VS];
}

}  // namespace mdc
}  // namespace hybridops
