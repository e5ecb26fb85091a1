// nvcuda::wmma for the CPU emulation of CUDA (cuda_emulation.h): the warp-level matrix API our
// tensor-core kernels use (16x16x16 tiles, fp16/bf16 operands, float accumulators), with the
// checks the hardware's documentation makes the caller's duty.
//
// Model: every lane of the warp holds the whole tile (a fragment's layout across lanes is opaque in
// CUDA, so code may only touch x[] element-wise, which works for any layout). Each call is
// warp-collective, as on the GPU: it first waits until all 32 lanes of the warp arrive, so a call
// only some lanes reach, or that lanes reach at different calls (divergence), or lanes that exited,
// is the emulation's error instead of undefined behaviour. load/store_matrix_sync check the documented
// alignment (a 256-bit aligned pointer; ldm a multiple of 16 bytes). mma_sync multiplies in float
// (a product of two fp16/bf16 values is exact in float) and adds the 16 products of each output
// in k order to the accumulator; the GPU's summation order is unspecified, so results may differ
// from it in the last bits of float.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation implements the 16x16x16 shape only");
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;  // every lane holds the whole tile (see above)
  T x[num_elements];
};

namespace detail {
// Waits for every lane of the calling warp at the same call site (the wmma call's return address),
// or raises the emulation's divergence error.
void warp_arrive(const void* site);
#define HYBRIDOPS_WMMA_ARRIVE() ::nvcuda::wmma::detail::warp_arrive(__builtin_return_address(0))
template <typename T>
void check_pointer(const T* p, unsigned ldm, const char* what) {
  TORCH_CHECK(reinterpret_cast<std::uintptr_t>(p) % 32 == 0, "hybridops CUDA emulation: wmma::", what,
              ": the pointer must be 256-bit aligned");
  TORCH_CHECK((ldm * sizeof(T)) % 16 == 0, "hybridops CUDA emulation: wmma::", what,
              ": ldm must be a multiple of 16 bytes, got ", ldm, " elements");
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
__attribute__((noinline)) void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& value) {
  HYBRIDOPS_WMMA_ARRIVE();
  for (auto& e : f.x) e = static_cast<T>(value);
}

// matrix_a / matrix_b: the layout is part of the fragment's type.
template <typename Use, int M, int N, int K, typename T, typename Layout>
__attribute__((noinline)) void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>, "operand fragments only");
  HYBRIDOPS_WMMA_ARRIVE();
  detail::check_pointer(p, ldm, "load_matrix_sync");
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::rows; ++r) {
    for (int c = 0; c < F::cols; ++c) {
      f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
    }
  }
}

template <int M, int N, int K, typename T>
__attribute__((noinline)) void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  HYBRIDOPS_WMMA_ARRIVE();
  detail::check_pointer(p, ldm, "store_matrix_sync");
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
  }
}

template <int M, int N, int K, typename Ta, typename La, typename Tb, typename Lb, typename Tc>
__attribute__((noinline)) void mma_sync(fragment<accumulator, M, N, K, Tc>& d, const fragment<matrix_a, M, N, K, Ta, La>& a,
              const fragment<matrix_b, M, N, K, Tb, Lb>& b, const fragment<accumulator, M, N, K, Tc>& c) {
  HYBRIDOPS_WMMA_ARRIVE();
  Tc out[M * N];  // d may be c
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      float s = static_cast<float>(c.x[i * N + j]);
      for (int k = 0; k < K; ++k) s += static_cast<float>(a.x[i * K + k]) * static_cast<float>(b.x[k * N + j]);
      out[i * N + j] = static_cast<Tc>(s);
    }
  }
  for (int e = 0; e < M * N; ++e) d.x[e] = out[e];
}

}  // namespace wmma
}  // namespace nvcuda
