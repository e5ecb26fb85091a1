// Switching between the emulation's fibers (cuda_emulation.cpp). On x86-64 a hand-written switch
// that saves the callee-saved registers, MXCSR and the x87 control word on the stack and swaps
// stack pointers: what swapcontext does minus its signal-mask system call, which took half the
// emulation's time (about 1 µs of 2 per switch). Elsewhere: ucontext.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__linux__)
#define HYBRIDOPS_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace hybridops {
namespace emu {

#ifdef HYBRIDOPS_EMU_ASM_SWITCH
extern "C" void hybridops_emu_switch(void** save_sp, void* load_sp);

struct FiberContext {
  void* sp = nullptr;
};

// Lays out `stack` so that the first switch into it "returns" into entry() (which must not return).
inline void fiber_prepare(FiberContext* c, char* stack, size_t size, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  uint64_t* p = reinterpret_cast<uint64_t*>(top);
  *--p = 0;                                       // entry's own return address: none
  *--p = reinterpret_cast<uint64_t>(entry);       // popped by `ret`; entry then sees rsp % 16 == 8
  for (int i = 0; i < 6; ++i) *--p = 0;           // rbp, rbx, r12-r15
  const uint32_t mxcsr = 0x1F80;                  // default: all exceptions masked, round to nearest
  const uint16_t fpucw = 0x037F;
  --p;
  std::memcpy(reinterpret_cast<char*>(p), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(p) + 4, &fpucw, 2);
  c->sp = p;
}

inline void fiber_switch(FiberContext* from, FiberContext* to) { hybridops_emu_switch(&from->sp, to->sp); }
#else
struct FiberContext {
  ucontext_t uc;
};

inline void fiber_prepare(FiberContext* c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}

inline void fiber_switch(FiberContext* from, FiberContext* to) { swapcontext(&from->uc, &to->uc); }
#endif

}  // namespace emu
}  // namespace hybridops
