// SIMD policies of the CPU MixConv kernels (NCHW and channels-last), shared by both translation
// units: GCC vector types per ISA, the ISA entry-point target attributes, the run-time ISA choice
// (HYBRIDOPS_CPU_ISA=base|avx2|avx512 caps it, for testing) and the kernel-size dispatch macro.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types never cross a non-inlined call boundary
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define MDC_X86_DISPATCH 1
#define MDC_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MDC_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#else
#define MDC_X86_DISPATCH 0
#endif

namespace hybridops {
namespace mdc {

// ---- SIMD policies -----------------------------------------------------------------------------
#if defined(__GNUC__) || defined(__clang__)
template <typename acc_t, int Bytes>
struct VecOf {
  typedef acc_t type __attribute__((vector_size(Bytes)));
};
#else
template <typename acc_t, int Bytes>
struct VecOf {
  using type = acc_t;  // no vector extensions: scalar accumulators
};
#endif

// bytes: vector width; rows: output rows per conv_run call (U), as many accumulators as the ISA
// has registers for (8 vectors; each tap's weight broadcast and offsets serve U x V of them).
struct IsaBase {
  static constexpr int bytes = 16;
  static constexpr int rows = 1;
};
struct IsaAvx2 {
  static constexpr int bytes = 32;
  static constexpr int rows = 2;
};
struct IsaAvx512 {
  static constexpr int bytes = 64;
  static constexpr int rows = 4;
};
constexpr int kMaxRows = 4;  // tiles are padded for this many rows per call, whatever the ISA

template <typename Isa, typename acc_t>
struct Simd {
  using vec = typename VecOf<acc_t, Isa::bytes>::type;
  static constexpr int L = static_cast<int>(sizeof(vec) / sizeof(acc_t));  // lanes per vector
  static constexpr int R = static_cast<int>(128 / sizeof(acc_t));          // outputs per run (32 fp32)
  static constexpr int V = R / L;                                          // vectors per run
  static constexpr int U = Isa::rows;                                      // rows per run
};

// Outputs per run, whatever the ISA: tiles are padded to whole runs so the last run of a row
// needs no bounds checks.
template <typename acc_t>
constexpr int64_t run_width() {
  return static_cast<int64_t>(128 / sizeof(acc_t));
}

// Runs STMT with `constexpr int K_` = k for the kernel sizes 3, 5 and 7, K_ = 0 (run-time loop
// bounds) otherwise. (A switch rather than a generic lambda: the body must stay inside the ISA entry
// point.) Each specialised size is a large share of the CPU build; 9 is not specialised: HybridNetSeg
// has one k=9 group, at 1/16 resolution, whose whole MixConv layer was 0.8% of the model's
// forward+backward time on the CPU (README, "Build time").
#define MDC_DISPATCH_K(k, ...)                \
  switch (k) {                                \
    case 3: {                                 \
      constexpr int K_ = 3;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 5: {                                 \
      constexpr int K_ = 5;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 7: {                                 \
      constexpr int K_ = 7;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    default: {                                \
      constexpr int K_ = 0;                   \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
  }

enum class HostIsa { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

inline HostIsa host_isa() {
  static const HostIsa supported = [] {
    HostIsa best = HostIsa::kBase;
#if MDC_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = HostIsa::kAvx2;
    if (best == HostIsa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      best = HostIsa::kAvx512;
    }
#endif
    return best;
  }();
  HostIsa cap = HostIsa::kAvx512;
  if (const char* env = std::getenv("HYBRIDOPS_CPU_ISA")) {
    const std::string v(env);
    if (v == "base" || v == "default") cap = HostIsa::kBase;
    else if (v == "avx2") cap = HostIsa::kAvx2;
  }
  return static_cast<HostIsa>(std::min(static_cast<int>(supported), static_cast<int>(cap)));
}

// Tasks per parallel chunk: small problems run on one thread (a parallel region costs more than
// it saves below roughly 32k multiply-adds).
inline int64_t grain_for(int64_t work_per_task) {
  constexpr int64_t kMinWork = int64_t(1) << 15;
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work_per_task));
}

}  // namespace mdc
}  // namespace hybridops
