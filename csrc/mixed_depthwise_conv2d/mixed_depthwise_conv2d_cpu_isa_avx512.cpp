// The CPU MixConv kernels (both layouts) compiled for AVX-512 (F, BW, VL, DQ), for fp32
// (the other dtypes run narrower clones): see mixed_depthwise_conv2d_cpu_isa.h. Empty off x86.
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_isa.h"

#if MDC_X86_DISPATCH
namespace hybridops {
namespace mdc {

MDC_DEFINE_ISA_ENTRIES(MDC_TARGET_AVX512, IsaAvx512, float)

}  // namespace mdc
}  // namespace hybridops
#endif
