// Test switches read by the CUDA launchers (the real GPU build and the CPU emulation alike), so
// tests can reach code paths that normal shapes never take:
//
//   HYBRIDOPS_FORCE_INT64_INDEX=1   launchers with a 32/64-bit index switch take the 64-bit
//                                   instantiation whatever the sizes.
//   HYBRIDOPS_MAX_GRID_BLOCKS=N     grid-stride launchers use at most N blocks, so every thread
//                                   walks its loop several times (N = 3 in the tests).
//
// Read at each launch (a getenv costs far less than a launch); unset, they change nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace hybridops {

inline bool force_int64_index() {
  const char* v = std::getenv("HYBRIDOPS_FORCE_INT64_INDEX");
  return v != nullptr && v[0] == '1';
}

// `natural` blocks, capped by HYBRIDOPS_MAX_GRID_BLOCKS when it is set to a positive number.
inline int64_t capped_grid_blocks(int64_t natural) {
  const char* v = std::getenv("HYBRIDOPS_MAX_GRID_BLOCKS");
  if (v == nullptr || v[0] == '\0') return natural;
  const long long cap = std::atoll(v);
  return cap > 0 ? std::min<int64_t>(natural, cap) : natural;
}

}  // namespace hybridops
