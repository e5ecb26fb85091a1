// The per-ISA entry points of the CPU MixConv kernels (both layouts) and the one run-time choice
// between them (with_host_isa, and run_parallel on top of it).
//
// Each entry point runs the tasks [begin, end) of one pass. It is defined in
// mixed_depthwise_conv2d_cpu_isa_<isa>.cpp with that ISA's target attribute, and the kernel bodies
// (always inlined) are compiled into it for that ISA. One translation unit per ISA: the build
// compiles them in parallel, and a change to the host side recompiles none of them.
//
// What is compiled for which ISA (each clone of a dtype costs about as much build time as the
// next; these were chosen to keep the CPU build short on a 2-core machine):
//   fp32        base, AVX2, AVX-512
//   fp16, bf16  base, AVX2 (an AVX-512 CPU runs the AVX2 clone)
//   fp64        base only: it serves gradcheck and comparisons against the reference, where speed
//               matters little.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_nchw_kernels.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_nhwc_kernels.h"

namespace hybridops {
namespace mdc {

// The widest ISA with entry points for storage type T.
template <typename T>
constexpr HostIsa kWidestIsa = std::is_same<T, double>::value  ? HostIsa::kBase
                               : std::is_same<T, float>::value ? HostIsa::kAvx512
                                                               : HostIsa::kAvx2;

// The entry points of one ISA for one storage type T (accumulating in at::opmath_type<T>).
#define MDC_ISA_ENTRY_NCHW(ATTR, ISA, T) \
  ATTR void run_isa(ISA, nchw::Pass pass, const nchw::Args<T>& a, int64_t begin, int64_t end)
#define MDC_ISA_ENTRY_NHWC(ATTR, ISA, T)                                                                  \
  ATTR void run_isa(ISA, nhwc::NhwcPass pass, const nhwc::Problem<at::opmath_type<T>, T>& p, int64_t begin, \
                    int64_t end)
#define MDC_DECLARE_ISA_ENTRIES(ATTR, ISA, T) \
  MDC_ISA_ENTRY_NCHW(ATTR, ISA, T);           \
  MDC_ISA_ENTRY_NHWC(ATTR, ISA, T)
// Used once per ISA and type by mixed_depthwise_conv2d_cpu_isa_<isa>.cpp.
#define MDC_DEFINE_ISA_ENTRIES(ATTR, ISA, T)                                                 \
  MDC_ISA_ENTRY_NCHW(ATTR, ISA, T) { nchw::run_tasks<ISA>(pass, a, begin, end); }            \
  MDC_ISA_ENTRY_NHWC(ATTR, ISA, T) { nhwc::nhwc_tasks<ISA>(pass, p, begin, end); }

#define MDC_PLAIN
MDC_DECLARE_ISA_ENTRIES(MDC_PLAIN, IsaBase, double);
MDC_DECLARE_ISA_ENTRIES(MDC_PLAIN, IsaBase, float);
MDC_DECLARE_ISA_ENTRIES(MDC_PLAIN, IsaBase, c10::Half);
MDC_DECLARE_ISA_ENTRIES(MDC_PLAIN, IsaBase, c10::BFloat16);
#if MDC_X86_DISPATCH
MDC_DECLARE_ISA_ENTRIES(MDC_TARGET_AVX2, IsaAvx2, float);
MDC_DECLARE_ISA_ENTRIES(MDC_TARGET_AVX2, IsaAvx2, c10::Half);
MDC_DECLARE_ISA_ENTRIES(MDC_TARGET_AVX2, IsaAvx2, c10::BFloat16);
MDC_DECLARE_ISA_ENTRIES(MDC_TARGET_AVX512, IsaAvx512, float);
#endif

// Calls f(IsaBase{}), f(IsaAvx2{}) or f(IsaAvx512{}): the widest ISA this CPU supports (capped by
// HYBRIDOPS_CPU_ISA) that has entry points for storage type T.
template <typename T, typename F>
void with_host_isa(const F& f) {
#if MDC_X86_DISPATCH
  const HostIsa isa = static_cast<HostIsa>(std::min(static_cast<int>(host_isa()), static_cast<int>(kWidestIsa<T>)));
  if constexpr (kWidestIsa<T> >= HostIsa::kAvx512) {
    if (isa == HostIsa::kAvx512) return f(IsaAvx512{});
  }
  if constexpr (kWidestIsa<T> >= HostIsa::kAvx2) {
    if (isa == HostIsa::kAvx2) return f(IsaAvx2{});
  }
#endif
  f(IsaBase{});
}

// Runs the tasks [0, tasks) of one pass of either layout (p: nchw::Args or nhwc::Problem, pass: its
// pass enum) in parallel, on the ISA with_host_isa picks for the problem's storage type.
template <typename PassT, typename ProblemT>
void run_parallel(PassT pass, const ProblemT& p, int64_t tasks, int64_t work_per_task) {
  with_host_isa<typename ProblemT::storage_t>([&](auto isa) {
    at::parallel_for(0, tasks, grain_for(work_per_task),
                     [&](int64_t begin, int64_t end) { run_isa(isa, pass, p, begin, end); });
  });
}

}  // namespace mdc
}  // namespace hybridops
