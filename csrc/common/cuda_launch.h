// How the .cu files reach the CUDA runtime: the real toolkit under nvcc, or the CPU emulation
// (csrc/emulation/cuda_emulation.h) when the same file is compiled by the host compiler with
// HYBRIDOPS_CUDA_EMULATION defined (the hybridops._C_emu module). Both builds compile the same
// kernel text; only these macros differ.
//
//   HYBRIDOPS_LAUNCH(grid, block, smem, stream, kernel)(args...)   kernel<<<grid, block, smem, stream>>>(args...)
//   HYBRIDOPS_DYNAMIC_SHARED(type, name);                           extern __shared__ type name[] (16-byte aligned)
//   HYBRIDOPS_DYNAMIC_SHARED_ALIGNED(type, name, bytes);            the same, `bytes`-aligned (a name of its own
//                                                                   per alignment; the emulation's is 128-aligned)
//   HYBRIDOPS_CUDA_IMPL(m) { m.impl(...); }                         TORCH_LIBRARY_IMPL(hybridops, CUDA, m), or
//                                                                   (hybridops_emu, CPU, m) in the emulation
#pragma once

#include <torch/library.h>

#include "common/launch_overrides.h"

#ifdef HYBRIDOPS_CUDA_EMULATION
#include "emulation/cuda_emulation.h"
#define HYBRIDOPS_LAUNCH(grid, block, smem, stream, ...) \
  ::hybridops::emu::make_launch(#__VA_ARGS__, __VA_ARGS__, grid, block, smem, stream)
#define HYBRIDOPS_DYNAMIC_SHARED(type, name) \
  type* name = static_cast<type*>(::hybridops::emu::dynamic_shared_memory())
#define HYBRIDOPS_DYNAMIC_SHARED_ALIGNED(type, name, bytes) HYBRIDOPS_DYNAMIC_SHARED(type, name)
#define HYBRIDOPS_CUDA_IMPL(m) TORCH_LIBRARY_IMPL(hybridops_emu, CPU, m)
#else
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#define HYBRIDOPS_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define HYBRIDOPS_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#define HYBRIDOPS_DYNAMIC_SHARED_ALIGNED(type, name, bytes) extern __shared__ __align__(bytes) type name[]
#define HYBRIDOPS_CUDA_IMPL(m) TORCH_LIBRARY_IMPL(hybridops, CUDA, m)
#endif
