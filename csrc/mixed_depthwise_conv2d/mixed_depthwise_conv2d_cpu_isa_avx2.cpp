// The CPU MixConv kernels (both layouts) compiled for AVX2 + FMA + F16C, for fp32, fp16 and bf16
// (fp64 runs the base ISA's): see mixed_depthwise_conv2d_cpu_isa.h. Empty off x86.
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_isa.h"

#if MDC_X86_DISPATCH
namespace hybridops {
namespace mdc {

MDC_DEFINE_ISA_ENTRIES(MDC_TARGET_AVX2, IsaAvx2, float)
MDC_DEFINE_ISA_ENTRIES(MDC_TARGET_AVX2, IsaAvx2, c10::Half)
MDC_DEFINE_ISA_ENTRIES(MDC_TARGET_AVX2, IsaAvx2, c10::BFloat16)

}  // namespace mdc
}  // namespace hybridops
#endif
