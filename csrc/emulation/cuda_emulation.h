// The CUDA built-ins our .cu files use, for the host compiler: the CPU emulation of the real
// kernels and launchers (issue #13). Included through common/cuda_launch.h when
// HYBRIDOPS_CUDA_EMULATION is defined; never by the GPU build.
//
// Model (runtime in cuda_emulation.cpp):
// * A launch checks its configuration like the driver (block <= 1024 threads and 1024 x 1024 x 64,
//   grid.y/z <= 65535, dynamic shared memory <= 48 KiB unless cudaFuncSetAttribute raised it, up to
//   the device profile's opt-in limit); a bad one records the CUDA error that the next
//   C10_CUDA_KERNEL_LAUNCH_CHECK() raises, and the kernel does not run.
// * Blocks run one after another on the calling OS thread. Each block gets its own dynamic shared
//   memory, heap-allocated with its exact size (AddressSanitizer sees every out-of-bounds byte) and
//   filled with 0xFF bytes (NaN in every float type) so a read before a write shows up.
// * Inside a block every CUDA thread is a fiber (ucontext). __syncthreads() parks the fiber; when
//   every live thread of the block is parked at a barrier, all resume. Warp shuffles and votes park
//   the lane until every lane of the mask has arrived (an exchange over the warp). The order in which
//   fibers start and resume is forward or reverse (HYBRIDOPS_EMU_ORDER): a missing barrier changes
//   the result between the two orders.
// * Errors a GPU would hang or corrupt on (a barrier only some threads reach, threads exiting while
//   others wait, a shuffle naming an exited lane, a deadlock) raise a c10::Error naming the kernel.
// * Device profiles (HYBRIDOPS_EMU_DEVICE): "sm61" (GTX 1080 Ti: 28 SMs, 48 KiB shared memory per
//   block, no opt-in) or "h100" (132 SMs, 227 KiB opt-in). Default: sm61.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace hybridops {
namespace emu {

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

// What threadIdx & co. read: the state of the emulated thread now running.
struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern thread_local ThreadState* tls_current;
inline const ThreadState& current() { return *tls_current; }

// The device properties a launcher reads (a subset of cudaDeviceProp, same field names).
struct DeviceProp {
  char name[64];
  int major, minor;
  int multiProcessorCount;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int warpSize;
};
const DeviceProp* device_properties();  // of the profile HYBRIDOPS_EMU_DEVICE names

struct Stream {};  // one in-order queue: launches run when they are made

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value);
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return func_set_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}
// Raises the error a call returned, or the error of the last launch (then clears it), like
// C10_CUDA_CHECK / C10_CUDA_KERNEL_LAUNCH_CHECK.
void check(cudaError_t err, const char* what);
void check_last_launch();

// What ran, for tests (e.g. that a forced small grid really launched few blocks).
struct Counters {
  uint64_t launches = 0, blocks = 0, threads = 0, barriers = 0, warp_exchanges = 0, switches = 0;
  std::set<std::string> kernels;  // the launch sites' kernel expressions, e.g. "im2col_kernel<scalar_t, int64_t>"
};
Counters& counters();

// ---- launches ----------------------------------------------------------------------------------
struct LaunchConfig {
  const char* kernel_name;
  const void* kernel;  // key of the cudaFuncSetAttribute limits
  dim3 grid, block;
  size_t smem_bytes;
};
// Runs body(ctx) once per emulated thread of the grid (validated first; see the model above).
void run_grid(const LaunchConfig& cfg, void (*body)(void*), void* ctx);

template <typename... P>
struct KernelLaunch {
  LaunchConfig cfg;
  void (*kernel)(P...);

  // Arguments convert to the parameter types once, like a real launch; every thread then gets
  // its own copy of them (kernels may modify their parameters).
  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    struct Ctx {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> params;
    } ctx{kernel, std::tuple<std::decay_t<P>...>(static_cast<std::decay_t<P>>(std::forward<A>(args))...)};
    run_grid(cfg, [](void* c) {
      auto* self = static_cast<Ctx*>(c);
      std::apply(self->kernel, self->params);  // by value: each thread's own copy
    }, &ctx);
  }
};

// A launch's grid or block: a dim3, or an integer converted to unsigned as a real launch does.
inline dim3 as_dim3(dim3 d) { return d; }
template <typename I, typename = std::enable_if_t<std::is_integral_v<I>>>
dim3 as_dim3(I v) {
  return dim3(static_cast<unsigned>(v));
}

template <typename G, typename B, typename... P>
KernelLaunch<P...> make_launch(const char* name, void (*kernel)(P...), G grid, B block, size_t smem, Stream) {
  return KernelLaunch<P...>{LaunchConfig{name, reinterpret_cast<const void*>(kernel), as_dim3(grid), as_dim3(block),
                                         smem},
                            kernel};
}

// ---- inside a kernel ---------------------------------------------------------------------------
void* dynamic_shared_memory();  // the running block's buffer
void syncthreads();  // the call site (its return address) names the barrier
// Parks the calling lane until every lane of `mask` in its warp has arrived.
void warp_sync(unsigned mask);
// The running thread's lane (0-31), its 64-bit exchange slot, and the slot of another lane of its
// warp (an error when that lane is not in `mask`).
int lane_id();
uint64_t* exchange_slot();
const uint64_t* lane_slot(unsigned mask, int lane);

template <typename T>
T shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 64 bits");
  const int lane = lane_id();
  std::memcpy(exchange_slot(), &value, sizeof(T));
  warp_sync(mask);
  T result = value;  // lanes past the segment's end keep their own value, like the hardware
  const int src = lane + static_cast<int>(delta);
  if (src < (lane / width + 1) * width) std::memcpy(&result, lane_slot(mask, src), sizeof(T));
  warp_sync(mask);  // every lane has read before any slot is reused
  return result;
}

unsigned ballot_sync(unsigned mask, int predicate);
inline int any_sync(unsigned mask, int predicate) { return ballot_sync(mask, predicate) != 0; }
inline int all_sync(unsigned mask, int predicate) { return ballot_sync(mask, predicate) == mask; }

// Blocks run one at a time on one OS thread, so a read-modify-write is atomic here.
template <typename T, typename V>
T atomic_add(T* address, V value) {
  const T old = *address;
  *address = static_cast<T>(old + static_cast<T>(value));
  return old;
}

template <typename T>
T ldg(const T* p) { return *p; }

}  // namespace emu
}  // namespace hybridops

// ---- the CUDA spellings ------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static thread_local  // static shared arrays: blocks of one OS thread run one at a time
#define threadIdx (::hybridops::emu::current().thread_idx)
#define blockIdx (::hybridops::emu::current().block_idx)
#define blockDim (::hybridops::emu::current().block_dim)
#define gridDim (::hybridops::emu::current().grid_dim)
#define __syncthreads() ::hybridops::emu::syncthreads()
#define __syncwarp(mask) ::hybridops::emu::warp_sync(mask)
#define __shfl_down_sync ::hybridops::emu::shfl_down_sync
#define __ballot_sync ::hybridops::emu::ballot_sync
#define __any_sync ::hybridops::emu::any_sync
#define __all_sync ::hybridops::emu::all_sync
#define __ldg ::hybridops::emu::ldg
#define atomicAdd ::hybridops::emu::atomic_add
#define gpuAtomicAdd ::hybridops::emu::atomic_add
#define C10_CUDA_KERNEL_LAUNCH_CHECK() ::hybridops::emu::check_last_launch()
#define C10_CUDA_CHECK(expr) ::hybridops::emu::check((expr), #expr)

namespace hybridops {
namespace emu {
constexpr int warpSize = 32;
}  // namespace emu
}  // namespace hybridops
using hybridops::emu::warpSize;
using hybridops::emu::dim3;
using hybridops::emu::cudaFuncSetAttribute;
using hybridops::emu::cudaFuncAttributeMaxDynamicSharedMemorySize;

// The ATen / c10 CUDA pieces the launchers touch. An inline namespace of our own gives them their
// own symbol names, so they never meet libtorch_cuda's functions of the same spelling.
namespace at {
namespace cuda {
inline namespace hybridops_emu {
inline ::hybridops::emu::Stream getCurrentCUDAStream() { return {}; }
inline const ::hybridops::emu::DeviceProp* getCurrentDeviceProperties() {
  return ::hybridops::emu::device_properties();
}
}  // namespace hybridops_emu
}  // namespace cuda
}  // namespace at

namespace c10 {
namespace cuda {
inline namespace hybridops_emu {
// The emulated device is the CPU: the ops are registered for CPU tensors.
struct CUDAGuard {
  template <typename Device>
  explicit CUDAGuard(const Device& device) {
    TORCH_CHECK(device.is_cpu(), "hybridops CUDA emulation: expected CPU tensors, got ", device);
  }
};
}  // namespace hybridops_emu
}  // namespace cuda
}  // namespace c10
