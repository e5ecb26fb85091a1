// The CPU MixConv kernels (both layouts) compiled for the baseline ISA (x86-64: SSE2; elsewhere the
// compiler's default), for every dtype: see mixed_depthwise_conv2d_cpu_isa.h.
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_isa.h"

namespace hybridops {
namespace mdc {

MDC_DEFINE_ISA_ENTRIES(MDC_PLAIN, IsaBase, double)
MDC_DEFINE_ISA_ENTRIES(MDC_PLAIN, IsaBase, float)
MDC_DEFINE_ISA_ENTRIES(MDC_PLAIN, IsaBase, c10::Half)
MDC_DEFINE_ISA_ENTRIES(MDC_PLAIN, IsaBase, c10::BFloat16)

}  // namespace mdc
}  // namespace hybridops
