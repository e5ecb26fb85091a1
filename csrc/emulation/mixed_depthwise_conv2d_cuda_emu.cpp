// mixed_depthwise_conv2d's CUDA source, unchanged, for the CPU emulation (HYBRIDOPS_CUDA_EMULATION is
// set for every unit of hybridops._C_emu): registers torch.ops.hybridops_emu.mixed_depthwise_conv2d{,_backward}.
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cuda.cu"
