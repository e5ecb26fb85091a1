// nvcuda::wmma for the CPU emulation of CUDA (cuda_emulation.h): the warp-level matrix API our
// tensor-core kernels use (16x16x16 tiles, fp16/bf16 operands, float accumulators), with the
// checks the hardware's documentation makes the caller's duty.
//
// Model: every lane of the warp holds the whole tile (a fragment's layout across lanes is opaque in
// CUDA, so code may only touch x[] element-wise, which works for any layout). load_matrix_sync,
// store_matrix_sync and mma_sync are warp-collective, as on the GPU: each first waits until all 32
// lanes of the warp arrive at the same call (its source position, taken by default arguments) with
// the same pointer, ldm and layout -- and, for a store, the same tile -- so a call only some lanes
// reach, lanes at different calls (divergence), lane-dependent arguments, or lanes that exited are
// the emulation's error instead of undefined behaviour. fill_fragment is per thread. load/store
// check the documented alignment (a 256-bit aligned pointer; ldm a multiple of 16 bytes). mma_sync
// multiplies in float (a product of two fp16/bf16 values is exact in float) and adds the 16
// products of each output in k order to the accumulator; the GPU's summation order is unspecified,
// so results may differ from it in the last bits of float.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstring>
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
// Waits for every lane of the calling warp at the same warp-collective call: `site` names the call
// (its source position) and everything that must be the same in every lane (pointer, ldm, layout,
// the fragment stored); lanes with different sites are the emulation's divergence error.
void warp_arrive(const void* site);

inline uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

inline const void* site_of(const char* file, int line, uint64_t args = 0) {
  uint64_t h = 0xcbf29ce484222325ull;
  h = mix(h, reinterpret_cast<std::uintptr_t>(file));
  h = mix(h, static_cast<uint64_t>(line));
  h = mix(h, args);
  return reinterpret_cast<const void*>(static_cast<std::uintptr_t>(h | 1));  // never nullptr (a shuffle's site)
}

template <typename T>
uint64_t hash_values(const T* x, int n) {
  uint64_t h = 0;
  for (int i = 0; i < n; ++i) {
    uint64_t bits = 0;
    std::memcpy(&bits, &x[i], sizeof(T) < sizeof(bits) ? sizeof(T) : sizeof(bits));
    h = mix(h, bits);
  }
  return h;
}

template <typename T>
void check_pointer(const T* p, unsigned ldm, const char* what) {
  TORCH_CHECK(reinterpret_cast<std::uintptr_t>(p) % 32 == 0, "hybridops CUDA emulation: wmma::", what,
              ": the pointer must be 256-bit aligned");
  TORCH_CHECK((ldm * sizeof(T)) % 16 == 0, "hybridops CUDA emulation: wmma::", what,
              ": ldm must be a multiple of 16 bytes, got ", ldm, " elements");
}
}  // namespace detail

// Not warp-collective (each thread fills its own elements), as on the GPU.
template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& value) {
  for (auto& e : f.x) e = static_cast<T>(value);
}

// matrix_a / matrix_b: the layout is part of the fragment's type.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm,
                      const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>, "operand fragments only");
  detail::warp_arrive(detail::site_of(file, line, detail::mix(reinterpret_cast<std::uintptr_t>(p), ldm)));
  detail::check_pointer(p, ldm, "load_matrix_sync");
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::rows; ++r) {
    for (int c = 0; c < F::cols; ++c) {
      f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
    }
  }
}

// Every lane must store the same tile (a lane that changed its copy would be a conflict here).
template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout,
                       const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  const uint64_t args = detail::mix(detail::mix(reinterpret_cast<std::uintptr_t>(p), ldm), layout);
  detail::warp_arrive(detail::site_of(file, line, detail::mix(args, detail::hash_values(f.x, M * N))));
  detail::check_pointer(p, ldm, "store_matrix_sync");
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
  }
}

template <int M, int N, int K, typename Ta, typename La, typename Tb, typename Lb, typename Tc>
void mma_sync(fragment<accumulator, M, N, K, Tc>& d, const fragment<matrix_a, M, N, K, Ta, La>& a,
              const fragment<matrix_b, M, N, K, Tb, Lb>& b, const fragment<accumulator, M, N, K, Tc>& c,
              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::warp_arrive(detail::site_of(file, line));
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
