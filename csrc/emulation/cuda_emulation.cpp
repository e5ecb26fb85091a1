// The runtime of the CPU emulation of CUDA (the model is described in cuda_emulation.h): launch
// checks, device profiles, and the per-block fiber scheduler behind __syncthreads() and the warp
// exchanges.
#include "emulation/cuda_emulation.h"
#include "emulation/fiber_switch.h"
#include "emulation/wmma_emulation.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define HYBRIDOPS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HYBRIDOPS_EMU_ASAN 1
#endif
#endif
#ifdef HYBRIDOPS_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#ifdef HYBRIDOPS_EMU_ASM_SWITCH
// hybridops_emu_switch(save_sp, load_sp): push the System V callee-saved registers and the
// MXCSR / x87 control words, store rsp in *save_sp, load load_sp, pop the same from there, return
// to wherever that stack was switched out (or to the entry fiber_prepare placed there).
asm(R"(
    .text
    .globl hybridops_emu_switch
    .type hybridops_emu_switch, @function
hybridops_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size hybridops_emu_switch, .-hybridops_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace hybridops {
namespace emu {

thread_local ThreadState* tls_current = nullptr;

Counters& counters() {
  static Counters c;
  return c;
}

// ---- device profiles ---------------------------------------------------------------------------
namespace {

DeviceProp make_profile(const char* name, int major, int minor, int sms, size_t optin, size_t per_sm) {
  DeviceProp p{};
  std::snprintf(p.name, sizeof(p.name), "%s", name);
  p.major = major;
  p.minor = minor;
  p.multiProcessorCount = sms;
  p.sharedMemPerBlock = 48 * 1024;
  p.sharedMemPerBlockOptin = optin;
  p.sharedMemPerMultiprocessor = per_sm;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647;
  p.maxGridSize[1] = 65535;
  p.maxGridSize[2] = 65535;
  p.warpSize = 32;
  return p;
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && v[0] != '\0') ? std::string(v) : std::string(fallback);
}

// The emulated thread order: forward (thread 0 first) or reverse, for block starts and resumes.
bool reverse_order() {
  const std::string v = env_or("HYBRIDOPS_EMU_ORDER", "forward");
  TORCH_CHECK(v == "forward" || v == "reverse", "HYBRIDOPS_EMU_ORDER must be 'forward' or 'reverse', got '", v, "'");
  return v == "reverse";
}

}  // namespace

const DeviceProp* device_properties() {
  // GTX 1080 Ti: Pascal has no opt-in beyond 48 KiB. H100 SXM: 227 KiB opt-in per block.
  static const DeviceProp sm61 = make_profile("NVIDIA GeForce GTX 1080 Ti (emulated)", 6, 1, 28, 48 * 1024, 96 * 1024);
  static const DeviceProp h100 = make_profile("NVIDIA H100 (emulated)", 9, 0, 132, 227 * 1024, 228 * 1024);
  const std::string v = env_or("HYBRIDOPS_EMU_DEVICE", "sm61");
  if (v == "sm61") return &sm61;
  TORCH_CHECK(v == "h100", "HYBRIDOPS_EMU_DEVICE must be 'sm61' or 'h100', got '", v, "'");
  return &h100;
}

// ---- errors and attributes ---------------------------------------------------------------------
namespace {

thread_local cudaError_t tls_last_error = cudaSuccess;
thread_local std::string tls_last_error_detail;

const char* error_string(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

std::mutex attr_mutex;
std::unordered_map<const void*, int>& max_dynamic_smem() {
  static std::unordered_map<const void*, int> m;
  return m;
}

constexpr size_t kDefaultDynamicSmem = 48 * 1024;

size_t dynamic_smem_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(attr_mutex);
  const auto it = max_dynamic_smem().find(kernel);
  return it == max_dynamic_smem().end() ? kDefaultDynamicSmem : static_cast<size_t>(it->second);
}

}  // namespace

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > device_properties()->sharedMemPerBlockOptin) {
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(attr_mutex);
  max_dynamic_smem()[kernel] = value;
  return cudaSuccess;
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "CUDA error: ", error_string(err), " (emulated; in ", what, ")");
}

void check_last_launch() {
  const cudaError_t err = tls_last_error;
  const std::string detail = tls_last_error_detail;
  tls_last_error = cudaSuccess;
  tls_last_error_detail.clear();
  TORCH_CHECK(err == cudaSuccess, "CUDA error: ", error_string(err), " (emulated: ", detail, ")");
}

// ---- the block scheduler -----------------------------------------------------------------------
namespace {

#ifdef HYBRIDOPS_EMU_ASAN
constexpr size_t kStackBytes = 512 * 1024;  // instrumented frames are larger
#else
constexpr size_t kStackBytes = 128 * 1024;
#endif

// A fiber's stack: mmap'd with a PROT_NONE guard page below it, so an overflow faults at once.
struct Fiber {
  FiberContext ctx;
  char* mapping = nullptr;
  char* stack = nullptr;
  void* fake_stack = nullptr;  // ASan's bookkeeping while the fiber is switched out

  Fiber() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(m != MAP_FAILED, "hybridops CUDA emulation: cannot map a fiber stack");
    mapping = static_cast<char*>(m);
    mprotect(mapping, page, PROT_NONE);
    stack = mapping + page;
  }
  ~Fiber() { munmap(mapping, kStackBytes + static_cast<size_t>(sysconf(_SC_PAGESIZE))); }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
};

enum class Wait : unsigned char { kUnstarted, kRunning, kBarrier, kWarp, kDone };

struct Thread {
  ThreadState state;
  Wait wait = Wait::kUnstarted;
  unsigned mask = 0;     // the warp exchange's mask while waiting at one
  const void* site = nullptr;  // the call site while waiting at a barrier or a wmma call
  Fiber* fiber = nullptr;
};

struct Block {
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  bool reverse = false;
  std::vector<Thread> threads;
  std::vector<uint64_t> slots;  // one exchange slot per thread
  std::vector<int> order;       // thread ids in start / resume order
  size_t next_start = 0;
  int running = -1;
  int alive = 0;
  std::string error;
  unsigned char* smem = nullptr;
  FiberContext scheduler;
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_stack = nullptr;  // the OS thread's stack, for ASan's switch back
  size_t scheduler_stack_size = 0;
  Fiber* entering = nullptr;  // the fiber being started
};

thread_local Block* tls_block = nullptr;
thread_local std::vector<std::unique_ptr<Fiber>> tls_pool;

// Switches from the scheduler into `f` and back (ASan told about both stacks).
void enter_fiber(Block& b, Fiber* f) {
#ifdef HYBRIDOPS_EMU_ASAN
  __sanitizer_start_switch_fiber(&b.scheduler_fake_stack, f->stack, kStackBytes);
#endif
  fiber_switch(&b.scheduler, &f->ctx);
#ifdef HYBRIDOPS_EMU_ASAN
  __sanitizer_finish_switch_fiber(b.scheduler_fake_stack, nullptr, nullptr);
#endif
  ++counters().switches;
}

// Called on a fiber after every switch into it.
void arrived_in_fiber(Block& b, Fiber* f) {
#ifdef HYBRIDOPS_EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &b.scheduler_stack, &b.scheduler_stack_size);
#else
  (void)b;
  (void)f;
#endif
}

// From a fiber back to the scheduler; `last` when the fiber will not be resumed.
void leave_fiber(Block& b, Fiber* f, bool last) {
#ifdef HYBRIDOPS_EMU_ASAN
  __sanitizer_start_switch_fiber(last ? nullptr : &f->fake_stack, b.scheduler_stack, b.scheduler_stack_size);
#else
  (void)last;
#endif
  fiber_switch(&f->ctx, &b.scheduler);
  arrived_in_fiber(b, f);
}

std::string describe(const Block& b, int t) {
  const ThreadState& s = b.threads[t].state;
  std::ostringstream o;
  o << "thread (" << s.thread_idx.x << ", " << s.thread_idx.y << ", " << s.thread_idx.z << ") of block ("
    << s.block_idx.x << ", " << s.block_idx.y << ", " << s.block_idx.z << ")";
  return o.str();
}

// A fiber runs unstarted threads one after another until one of them parks (then the scheduler
// starts the next thread on a new fiber) or none is left: kernels without barriers use one fiber.
void fiber_main() {
  Block& b = *tls_block;
  Fiber* self = b.entering;
  arrived_in_fiber(b, self);
  while (b.error.empty() && b.next_start < b.order.size()) {
    const int t = b.order[b.next_start++];
    Thread& th = b.threads[t];
    th.fiber = self;
    th.wait = Wait::kRunning;
    b.running = t;
    tls_current = &th.state;
    try {
      b.body(b.ctx);
    } catch (const std::exception& e) {
      b.error = describe(b, t) + " threw: " + e.what();
    }
    th.wait = Wait::kDone;
    --b.alive;
  }
  leave_fiber(b, self, /*last=*/true);
  std::abort();  // never resumed
}

Fiber* fiber_for(size_t index) {
  while (tls_pool.size() <= index) tls_pool.push_back(std::make_unique<Fiber>());
  return tls_pool[index].get();
}

void start_fiber(Block& b, Fiber* f) {
#ifdef HYBRIDOPS_EMU_ASAN
  // A reused stack still carries the redzones of frames that never returned (a fiber is left, not
  // unwound, when its last thread ends): clear them before laying out the new fiber.
  ASAN_UNPOISON_MEMORY_REGION(f->stack, kStackBytes);
#endif
  fiber_prepare(&f->ctx, f->stack, kStackBytes, fiber_main);
  f->fake_stack = nullptr;
  b.entering = f;
  enter_fiber(b, f);
}

void resume(Block& b, int t) {
  Thread& th = b.threads[t];
  th.wait = Wait::kRunning;
  b.running = t;
  tls_current = &th.state;
  enter_fiber(b, th.fiber);
}

// Parks the running thread in state `w` until the scheduler resumes it.
void park(Wait w, unsigned mask, const void* site) {
  Block& b = *tls_block;
  const int t = b.running;
  Thread& th = b.threads[t];
  th.wait = w;
  th.mask = mask;
  th.site = site;
  leave_fiber(b, th.fiber, /*last=*/false);
  tls_current = &th.state;
}

// Releases one warp exchange whose lanes have all arrived; false if none is complete.
bool release_warp_exchange(Block& b) {
  const int n = static_cast<int>(b.threads.size());
  const int warps = (n + 31) / 32;
  for (int i = 0; i < warps; ++i) {
    const int w = b.reverse ? warps - 1 - i : i;
    for (int lane = 0; lane < 32 && w * 32 + lane < n; ++lane) {
      const Thread& th = b.threads[w * 32 + lane];
      if (th.wait != Wait::kWarp) continue;
      bool complete = true;
      for (int l = 0; l < 32; ++l) {
        if (!(th.mask >> l & 1u)) continue;
        const int t = w * 32 + l;
        if (t >= n || b.threads[t].wait == Wait::kDone) {
          b.error = describe(b, w * 32 + lane) + " waits in a warp exchange whose mask names lane " +
                    std::to_string(l) + ", which has exited or does not exist";
          return false;
        }
        if (b.threads[t].wait != Wait::kWarp || b.threads[t].mask != th.mask) complete = false;
      }
      if (!complete) continue;
      for (int l = 0; l < 32; ++l) {
        if ((th.mask >> l & 1u) && b.threads[w * 32 + l].site != th.site) {
          b.error = describe(b, w * 32 + lane) + " and " + describe(b, w * 32 + l) +
                    " are at different warp-collective calls, or pass different arguments to one (a wmma "
                    "call in divergent code, or a lane-dependent pointer, ldm or fragment)";
          return false;
        }
      }
      const unsigned mask = th.mask;
      ++counters().warp_exchanges;
      for (int j = 0; j < 32; ++j) {
        const int l = b.reverse ? 31 - j : j;
        if (mask >> l & 1u) b.threads[w * 32 + l].wait = Wait::kRunning;
      }
      for (int j = 0; j < 32 && b.error.empty(); ++j) {
        const int l = b.reverse ? 31 - j : j;
        if (mask >> l & 1u) resume(b, w * 32 + l);
      }
      return true;
    }
  }
  return false;
}

// Releases the block barrier when every live thread waits at it; false (and b.error set when it is
// a bug) otherwise.
bool release_barrier(Block& b) {
  int waiting = 0, exited = -1, first = -1;
  for (int t = 0; t < static_cast<int>(b.threads.size()); ++t) {
    const Thread& th = b.threads[t];
    if (th.wait == Wait::kBarrier) {
      ++waiting;
      if (first < 0) first = t;
    } else if (th.wait == Wait::kDone && exited < 0) {
      exited = t;
    }
  }
  if (waiting == 0 || waiting != b.alive) return false;
  if (exited >= 0) {
    b.error = describe(b, exited) + " exited while " + describe(b, first) +
              " waits at __syncthreads() (a GPU hangs or misbehaves here)";
    return false;
  }
  for (const Thread& th : b.threads) {
    if (th.site != b.threads[first].site) {
      b.error = "threads of block wait at different __syncthreads() calls (a barrier in divergent code), e.g. " +
                describe(b, first);
      return false;
    }
  }
  ++counters().barriers;
  for (Thread& th : b.threads) th.wait = Wait::kRunning;
  for (size_t i = 0; i < b.order.size() && b.error.empty(); ++i) resume(b, b.order[i]);
  return true;
}

std::string deadlock_report(const Block& b) {
  std::ostringstream o;
  o << "deadlock: no thread can go on (";
  int shown = 0;
  for (int t = 0; t < static_cast<int>(b.threads.size()) && shown < 4; ++t) {
    const Wait w = b.threads[t].wait;
    if (w == Wait::kBarrier || w == Wait::kWarp) {
      o << (shown++ ? "; " : "") << describe(b, t)
        << (w == Wait::kBarrier ? " at __syncthreads()" : " in a warp exchange");
    }
  }
  o << ")";
  return o.str();
}

void run_block(Block& b) {
  size_t fibers_used = 0;
  for (;;) {
    if (!b.error.empty()) return;
    if (b.next_start < b.order.size()) {
      start_fiber(b, fiber_for(fibers_used++));
      continue;
    }
    if (b.alive == 0) return;
    if (release_warp_exchange(b) || !b.error.empty()) continue;
    if (release_barrier(b) || !b.error.empty()) continue;
    b.error = deadlock_report(b);
  }
}

std::string launch_text(const LaunchConfig& cfg) {
  std::ostringstream o;
  o << cfg.kernel_name << " with grid (" << cfg.grid.x << ", " << cfg.grid.y << ", " << cfg.grid.z << "), block ("
    << cfg.block.x << ", " << cfg.block.y << ", " << cfg.block.z << "), " << cfg.smem_bytes
    << " bytes of dynamic shared memory";
  return o.str();
}

// The driver's checks of a launch configuration: an error, or cudaSuccess.
cudaError_t validate(const LaunchConfig& cfg, std::string* why) {
  const DeviceProp& p = *device_properties();
  const dim3 g = cfg.grid, bl = cfg.block;
  const uint64_t threads = uint64_t(bl.x) * bl.y * bl.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 || threads > uint64_t(p.maxThreadsPerBlock) ||
      bl.x > unsigned(p.maxThreadsDim[0]) || bl.y > unsigned(p.maxThreadsDim[1]) ||
      bl.z > unsigned(p.maxThreadsDim[2]) || g.x > unsigned(p.maxGridSize[0]) || g.y > unsigned(p.maxGridSize[1]) ||
      g.z > unsigned(p.maxGridSize[2])) {
    *why = "grid or block outside the device's limits";
    return cudaErrorInvalidConfiguration;
  }
  const size_t limit = dynamic_smem_limit(cfg.kernel);
  if (cfg.smem_bytes > limit) {
    *why = "dynamic shared memory above the kernel's limit of " + std::to_string(limit) + " bytes";
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

}  // namespace

void run_grid(const LaunchConfig& cfg, void (*body)(void*), void* ctx) {
  TORCH_CHECK(tls_block == nullptr, "hybridops CUDA emulation: a kernel launched from inside a kernel");
  std::string why;
  const cudaError_t err = validate(cfg, &why);
  if (err != cudaSuccess) {
    tls_last_error = err;
    tls_last_error_detail = launch_text(cfg) + ": " + why;
    return;
  }
  const bool reverse = reverse_order();
  ++counters().launches;
  counters().kernels.insert(cfg.kernel_name);
  const int threads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  const uint64_t blocks = uint64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  Block b;
  b.body = body;
  b.ctx = ctx;
  b.reverse = reverse;
  b.threads.resize(threads);
  b.slots.resize(threads);
  b.order.resize(threads);
  for (int i = 0; i < threads; ++i) b.order[i] = reverse ? threads - 1 - i : i;
  tls_block = &b;
  struct Reset {
    ~Reset() {
      tls_block = nullptr;
      tls_current = nullptr;
    }
  } reset;
  for (uint64_t i = 0; i < blocks; ++i) {
    const uint64_t lin = reverse ? blocks - 1 - i : i;
    const uint3 bidx{static_cast<unsigned>(lin % cfg.grid.x), static_cast<unsigned>(lin / cfg.grid.x % cfg.grid.y),
                     static_cast<unsigned>(lin / (uint64_t(cfg.grid.x) * cfg.grid.y))};
    for (int t = 0; t < threads; ++t) {
      Thread& th = b.threads[t];
      th = Thread{};
      th.state.thread_idx = uint3{static_cast<unsigned>(t % cfg.block.x),
                                  static_cast<unsigned>(t / cfg.block.x % cfg.block.y),
                                  static_cast<unsigned>(t / (cfg.block.x * cfg.block.y))};
      th.state.block_idx = bidx;
      th.state.block_dim = cfg.block;
      th.state.grid_dim = cfg.grid;
    }
    b.next_start = 0;
    b.alive = threads;
    // Exact size (ASan's redzones sit right after it), filled with 0xFF: NaN in every float type.
    // 128-byte aligned, like the start of a GPU block's shared memory (wmma needs 32 bytes).
    void* smem_block = nullptr;
    TORCH_CHECK(posix_memalign(&smem_block, 128, cfg.smem_bytes > 0 ? cfg.smem_bytes : 1) == 0,
                "hybridops CUDA emulation: cannot allocate ", cfg.smem_bytes, " bytes of shared memory");
    std::unique_ptr<unsigned char, void (*)(void*)> smem(static_cast<unsigned char*>(smem_block), std::free);
    std::memset(smem.get(), 0xFF, cfg.smem_bytes);
    b.smem = smem.get();
    run_block(b);
    ++counters().blocks;
    counters().threads += threads;
    TORCH_CHECK(b.error.empty(), "hybridops CUDA emulation: ", launch_text(cfg), ": ", b.error);
  }
}

// ---- inside a kernel ---------------------------------------------------------------------------
void* dynamic_shared_memory() { return tls_block->smem; }

__attribute__((noinline)) void syncthreads() { park(Wait::kBarrier, 0, __builtin_return_address(0)); }

void warp_sync(unsigned mask) {
  const int lane = lane_id();
  if (!(mask >> lane & 1u)) {
    tls_block->error = describe(*tls_block, tls_block->running) + " joins a warp exchange whose mask leaves it out";
  }
  park(Wait::kWarp, mask, nullptr);
}

int lane_id() { return tls_block->running % 32; }

uint64_t* exchange_slot() { return &tls_block->slots[tls_block->running]; }

const uint64_t* lane_slot(unsigned mask, int lane) {
  Block& b = *tls_block;
  const int t = b.running - b.running % 32 + lane;
  TORCH_CHECK(mask >> lane & 1u, "hybridops CUDA emulation: ", describe(b, b.running), " reads lane ", lane,
              ", which its mask leaves out");
  return &b.slots[t];
}

unsigned ballot_sync(unsigned mask, int predicate) {
  *exchange_slot() = predicate != 0;
  warp_sync(mask);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l) {
    if (mask >> l & 1u) bits |= (*lane_slot(mask, l) != 0 ? 1u : 0u) << l;
  }
  warp_sync(mask);
  return bits;
}

}  // namespace emu
}  // namespace hybridops

// wmma calls are warp-collective (wmma_emulation.h): all 32 lanes must arrive, at the same call.
void nvcuda::wmma::detail::warp_arrive(const void* site) {
  ::hybridops::emu::park(::hybridops::emu::Wait::kWarp, 0xffffffffu, site);
}
