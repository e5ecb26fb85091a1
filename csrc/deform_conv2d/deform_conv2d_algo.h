// Which deform_conv2d algorithm runs: the columns buffer + GEMM ("im2col", torchvision's structure)
// or the fused kernels that keep the sampled columns on chip ("fused"). HYBRIDOPS_DCN_ALGO=fused|im2col
// forces one (tests and benchmarks); unset or "auto", each backend's documented heuristic chooses
// (and falls back to im2col for shapes the fused kernels do not cover).
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace hybridops {
namespace dcn {

enum class Algo { kAuto, kFused, kIm2col };

inline Algo requested_algo() {
  const char* v = std::getenv("HYBRIDOPS_DCN_ALGO");
  if (v == nullptr || v[0] == '\0') return Algo::kAuto;
  const std::string s(v);
  if (s == "auto") return Algo::kAuto;
  if (s == "fused") return Algo::kFused;
  if (s == "im2col") return Algo::kIm2col;
  TORCH_CHECK(false, "HYBRIDOPS_DCN_ALGO must be 'fused', 'im2col' or 'auto', got '", s, "'");
}

// Whether the fused forward may use tensor cores for fp16/bf16 on sm_80+ (default yes);
// HYBRIDOPS_DCN_TENSOR_CORES=0 keeps the FMA kernel (the same math as on sm_61, float products of
// the unrounded samples) for comparisons: with HYBRIDOPS_DCN_ALGO=fused it runs the FMA fused
// forward; under auto the FMA forward's channel limit applies (im2col above it). Read on every
// CUDA forward call, whatever the dtype, so a bad value always raises.
inline bool tensor_cores_requested() {
  const char* v = std::getenv("HYBRIDOPS_DCN_TENSOR_CORES");
  if (v == nullptr || v[0] == '\0') return true;
  const std::string s(v);
  TORCH_CHECK(s == "0" || s == "1", "HYBRIDOPS_DCN_TENSOR_CORES must be '0' or '1', got '", s, "'");
  return s == "1";
}

}  // namespace dcn
}  // namespace hybridops
