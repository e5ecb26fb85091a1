// The CUDA emulation of the MixConv kernels (HYBRIDOPS_MDC_EMULATE_CUDA=1, tests only): see
// mixed_depthwise_conv2d_cpu_emulate_cuda.h.
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_emulate_cuda.h"

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_nchw_kernels.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_driver.h"
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_plan.h"

namespace hybridops {
namespace mdc {

namespace {
using nchw::grow;

int64_t env_int(const char* name, int64_t fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  TORCH_CHECK(end != env && *end == '\0' && v > 0, MDC_OP ": ", name, " must be a positive integer, got '", env, "'");
  return static_cast<int64_t>(v);
}

// The emulated device's plan of `pass` (the CUDA launcher's device_plan, same error text).
template <typename acc_t>
TilePlan emu_plan(PlanPass pass, const Geometry& g, const char* what) {
  const int64_t limit = env_int("HYBRIDOPS_MDC_EMULATE_SMEM", kPortableSmemBytes);
  const TilePlan plan = plan_pass(pass, sizeof(acc_t), g, limit);
  TORCH_CHECK(plan.rows_per_thread > 0, MDC_OP ": the ", what, " tile needs ",
              smem_bytes(pass, sizeof(acc_t), g.max_kernel, static_cast<int>(g.stride_h), static_cast<int>(g.stride_w),
                         static_cast<int>(g.dil_h), static_cast<int>(g.dil_w), kTY, 8),
              " bytes of shared memory even at its smallest (8 x 8 outputs), but this GPU allows ", limit,
              " per block (emulated)");
  return plan;
}

}  // namespace

bool emulate_cuda() {
  const char* env = std::getenv("HYBRIDOPS_MDC_EMULATE_CUDA");
  return env != nullptr && std::string(env) == "1";
}

template <typename scalar_t>
void emu_forward(const Geometry& g, const GroupPointers<const scalar_t>& wp, const scalar_t* in, const scalar_t* bias,
                 scalar_t* out, int64_t H, int64_t W, int64_t Ho, int64_t Wo, bool flip) {
  using acc_t = at::opmath_type<scalar_t>;
  const TilePlan plan = emu_plan<acc_t>(PlanPass::kForward, g, "forward");
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  const int64_t tiles_w = ceil_div(Wo, plan.tile_w), tiles = tiles_w * ceil_div(Ho, plan.tile_h);
  std::vector<acc_t> smem;
  for (int64_t plane_idx = 0; plane_idx < g.batch * g.channels; ++plane_idx) {
    for (int64_t tile_idx = 0; tile_idx < tiles; ++tile_idx) {  // one block
      const int ho0 = static_cast<int>(tile_idx / tiles_w) * plan.tile_h;
      const int wo0 = static_cast<int>(tile_idx % tiles_w) * plan.tile_w;
      const int64_t c = plane_idx % g.channels;
      const int gi = g.group_of(c);
      const int k = g.kernel[gi];
      const SmemTile t = smem_tile(plan.tile_h, plan.tile_w, sh, sw, dh, dw, k);
      // exactly the block's shared memory (the plan's bytes cover the largest kernel of the launch)
      TORCH_CHECK(int64_t(k * k + t.rows * t.row_stride) * int64_t(sizeof(acc_t)) <= plan.smem_bytes, "emu: smem");
      acc_t* w = grow(smem, int64_t(k) * k + int64_t(t.rows) * t.row_stride);
      acc_t* tile = w + k * k;
      load_taps_part(wp.ptr[gi] + (c - g.group_begin[gi]) * k * k, k, flip, w, 0, 1);
      const acc_t b = bias ? static_cast<acc_t>(bias[c]) : acc_t(0);
      const int64_t ph = g.pad_h(k), pw = g.pad_w(k);
      load_tile_part(in + plane_idx * H * W, H, W, int64_t(ho0) * sh - ph, int64_t(wo0) * sw - pw, t, sw, tile, 0, 1);
      for (int ty = 0; ty < kTY; ++ty) {
        for (int tx = 0; tx < plan.tile_w; ++tx) {  // threads tx >= tile_w only load
          acc_t acc[kRowsPerThread][1];
          for (int u = 0; u < kRowsPerThread; ++u) acc[u][0] = b;
          MDC_DISPATCH_K(k, forward_thread_rows<K_>(tile, t, sh, sw, dh, dw, k, w, tx, ty, plan.rows_per_thread, acc));
          for (int u = 0; u < plan.rows_per_thread; ++u) {
            const int64_t ho = ho0 + ty + u * kTY, wo = wo0 + tx;
            if (ho < Ho && wo < Wo) out[plane_idx * Ho * Wo + ho * Wo + wo] = static_cast<scalar_t>(acc[u][0]);
          }
        }
      }
    }
  }
}

template <typename scalar_t>
void emu_grad_input_gather(const Geometry& g, const GroupPointers<const scalar_t>& wp, const scalar_t* grad_out,
                           scalar_t* grad_in) {
  using acc_t = at::opmath_type<scalar_t>;
  const TilePlan plan = emu_plan<acc_t>(PlanPass::kGradInputGather, g, "grad_input");
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  const int64_t tiles_w = ceil_div(g.width, plan.tile_w), tiles = tiles_w * ceil_div(g.height, plan.tile_h);
  std::vector<acc_t> smem;
  for (int64_t plane_idx = 0; plane_idx < g.batch * g.channels; ++plane_idx) {
    for (int64_t tile_idx = 0; tile_idx < tiles; ++tile_idx) {
      const int h0 = static_cast<int>(tile_idx / tiles_w) * plan.tile_h;
      const int x0 = static_cast<int>(tile_idx % tiles_w) * plan.tile_w;
      const int64_t c = plane_idx % g.channels;
      const int gi = g.group_of(c);
      const int k = g.kernel[gi];
      const int ph = static_cast<int>(g.pad_h(k)), pw = static_cast<int>(g.pad_w(k));
      const GatherWindow gw = gather_window(h0, x0, sh, sw, dh, dw, k, plan.tile_h, plan.tile_w);
      TORCH_CHECK(int64_t(k * k + gw.rows * gw.cols) * int64_t(sizeof(acc_t)) <= plan.smem_bytes, "emu: smem");
      acc_t* w = grow(smem, int64_t(k) * k + int64_t(gw.rows) * gw.cols);
      acc_t* tile = w + k * k;
      load_taps_part(wp.ptr[gi] + (c - g.group_begin[gi]) * k * k, k, false, w, 0, 1);
      load_gather_part(grad_out + plane_idx * g.out_h * g.out_w, g.out_h, g.out_w, gw, tile, 0, 1);
      for (int ty = 0; ty < kTY; ++ty) {
        for (int tx = 0; tx < plan.tile_w; ++tx) {
          for (int u = 0; u < plan.rows_per_thread; ++u) {
            const int h = h0 + ty + u * kTY, x = x0 + tx;
            acc_t v = 0;
            MDC_DISPATCH_K(k, v = (grad_input_gather<K_, acc_t>(tile, gw.cols, gw.ho_lo, gw.wo_lo, gw.rows, gw.cols, sh,
                                                               sw, dh, dw, ph, pw, k, w, h, x)));
            if (h < g.height && x < g.width) {
              grad_in[plane_idx * g.height * g.width + int64_t(h) * g.width + x] = static_cast<scalar_t>(v);
            }
          }
        }
      }
    }
  }
}

template <typename scalar_t>
void emu_grad_weight(const Geometry& g, const scalar_t* in, const scalar_t* grad_out,
                     const GroupPointers<scalar_t>& grad_w) {
  using acc_t = at::opmath_type<scalar_t>;
  const TilePlan plan = emu_plan<acc_t>(PlanPass::kGradWeight, g, "grad_weight");
  const int tile_h = plan.tile_h, tile_w = plan.tile_w;
  const int sh = static_cast<int>(g.stride_h), sw = static_cast<int>(g.stride_w);
  const int dh = static_cast<int>(g.dil_h), dw = static_cast<int>(g.dil_w);
  const int64_t H = g.height, W = g.width, Ho = g.out_h, Wo = g.out_w;
  const int64_t tiles_w = ceil_div(Wo, tile_w), tiles = tiles_w * ceil_div(Ho, tile_h);
  const int64_t items = g.batch * tiles;
  int64_t chunks = grad_weight_chunks(g.batch, Ho, Wo, g.channels, tile_h, tile_w);
  chunks = std::max<int64_t>(1, std::min(items, env_int("HYBRIDOPS_MDC_EMULATE_CHUNKS", chunks)));
  const int64_t grid_x = grad_weight_grid_x(chunks, g.channels, env_int("HYBRIDOPS_MDC_EMULATE_SMS", 1));
  const int max_taps = g.max_kernel * g.max_kernel;
  std::vector<acc_t> partials(g.channels * chunks * max_taps, acc_t(0)), smem;
  for (int64_t c = 0; c < g.channels; ++c) {
    const int gi = g.group_of(c);
    const int k = g.kernel[gi];
    const int kk = k * k;
    const int64_t ph = g.pad_h(k), pw = g.pad_w(k);
    const SmemTile t = smem_tile(tile_h, tile_w, sh, sw, dh, dw, k);
    TORCH_CHECK(int64_t(t.rows * t.row_stride + tile_h * kTileW + kk) * int64_t(sizeof(acc_t)) <= plan.smem_bytes,
                "emu: smem");
    for (int64_t bx = 0; bx < grid_x; ++bx) {  // one block: chunks bx, bx + grid_x, ...
      acc_t* tile = grow(smem, int64_t(t.rows) * t.row_stride + tile_h * kTileW + kk);
      acc_t* gtile = tile + t.rows * t.row_stride;
      acc_t* part = gtile + tile_h * kTileW;
      for (int64_t chunk = bx; chunk < chunks; chunk += grid_x) {
        std::fill(part, part + kk, acc_t(0));
        for (int64_t item = chunk; item < items; item += chunks) {
          const int64_t n = item / tiles;
          const int tile_idx = static_cast<int>(item - n * tiles);
          const int ho0 = (tile_idx / static_cast<int>(tiles_w)) * tile_h;
          const int wo0 = (tile_idx % static_cast<int>(tiles_w)) * tile_w;
          const int64_t plane_idx = n * g.channels + c;
          load_tile_part(in + plane_idx * H * W, H, W, int64_t(ho0) * sh - ph, int64_t(wo0) * sw - pw, t, sw, tile, 0,
                         1);
          load_gout_tile_part(grad_out + plane_idx * Ho * Wo, Ho, Wo, ho0, wo0, tile_h, tile_w, gtile, 0, 1);
          for (int warp = 0; warp < kWarps; ++warp) {
            for (int tap = warp; tap < kk; tap += kWarps) {
              acc_t v[32], nv[32];
              for (int lane = 0; lane < 32; ++lane) {
                v[lane] = tap_lane_partial(tile, t, gtile, tile_h, tile_w, sh, sw, dh, dw, k, tap, lane);
              }
              for (int off = 16; off > 0; off >>= 1) {  // __shfl_down_sync: out-of-range lanes keep their value
                for (int lane = 0; lane < 32; ++lane) nv[lane] = v[lane] + (lane + off < 32 ? v[lane + off] : v[lane]);
                std::copy(nv, nv + 32, v);
              }
              part[tap] += v[0];
            }
          }
        }
        std::copy(part, part + kk, partials.begin() + (c * chunks + chunk) * max_taps);
      }
    }
    for (int tap = 0; tap < kk; ++tap) {
      acc_t sum = 0;
      for (int64_t ch = 0; ch < chunks; ++ch) sum += partials[(c * chunks + ch) * max_taps + tap];
      grad_w.ptr[gi][(c - g.group_begin[gi]) * kk + tap] = static_cast<scalar_t>(sum);
    }
  }
}

#define MDC_INSTANTIATE_EMU(T)                                                                                    \
  template void emu_forward<T>(const Geometry&, const GroupPointers<const T>&, const T*, const T*, T*, int64_t,   \
                               int64_t, int64_t, int64_t, bool);                                                  \
  template void emu_grad_input_gather<T>(const Geometry&, const GroupPointers<const T>&, const T*, T*);           \
  template void emu_grad_weight<T>(const Geometry&, const T*, const T*, const GroupPointers<T>&);
MDC_INSTANTIATE_EMU(double)
MDC_INSTANTIATE_EMU(float)
MDC_INSTANTIATE_EMU(c10::Half)
MDC_INSTANTIATE_EMU(c10::BFloat16)

}  // namespace mdc
}  // namespace hybridops
