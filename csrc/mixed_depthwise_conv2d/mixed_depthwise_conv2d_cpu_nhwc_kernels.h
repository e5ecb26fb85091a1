// CPU kernels of mixed_depthwise_conv2d for channels-last (NHWC) tensors: the per-task bodies,
// templated on the SIMD policy (mixed_depthwise_conv2d_cpu_simd.h). Instantiated once per ISA by
// mixed_depthwise_conv2d_cpu_isa_{base,avx2,avx512}.cpp (the only includers besides the host side
// mixed_depthwise_conv2d_cpu_nhwc.cpp, which uses the types), so each ISA compiles in its own
// translation unit and the build runs them in parallel.
//
// In NHWC memory a pixel's channels are contiguous, so these kernels vectorise over channels: each
// SIMD lane is one channel, and a group's weights are packed tap-major ([k*k, C_g], one vector
// load gives one tap's weights for consecutive channels). No tiles and no transposes:
//  * forward, and grad_input at stride 1 (the forward on grad_output with the flipped kernel):
//    tasks are output rows (image, h_out). Per channel group and channel block, U consecutive
//    outputs share every tap's weight vectors; outputs whose taps leave the image take a path with
//    clipped tap ranges.
//  * grad_input at stride > 1: tasks are input rows; every pixel gathers the taps whose output
//    exists (in range and stride-aligned): no scatter, no races.
//  * grad_weight: tasks are (channel block, chunk of output rows); each writes its own partial
//    sums [tap, channel], added in chunk order afterwards. Blocks and chunks depend only on the
//    shapes, never on the thread count or the ISA, and each lane is one channel, so the result is
//    the same bit for bit on any machine with the same FMA behaviour and any number of threads.
// fp16/bf16 tensors are read in their storage type and widened to float as they are loaded (float
// accumulation); output rows go through a float row buffer per thread. No whole-tensor copies.
#pragma once

#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_cpu_simd.h"  // first: its -Wpsabi pragma
#include "mixed_depthwise_conv2d/mixed_depthwise_conv2d_kernel.h"

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace hybridops {
namespace mdc {
namespace nhwc {

// Forward register blocking: U outputs x V vectors of accumulators per step (the sliding-window
// body: U accumulators and the k weights of one kernel row, one vector each).
template <typename Isa>
struct NhwcBlock {  // 16 vector registers
  static constexpr int U = 4;
  static constexpr int V = 2;
};
template <>
struct NhwcBlock<IsaAvx512> {  // 32 vector registers
  static constexpr int U = 8;
  static constexpr int V = 2;
};

#if defined(__GNUC__) || defined(__clang__)
#define MDC_UNROLL _Pragma("GCC unroll 64")
#else
#define MDC_UNROLL
#endif

// Keeps a loaded vector in a register: without this GCC folds the load into every FMA that uses
// it, which turns the sliding-window body's one load per K FMAs back into one load per FMA.
template <typename vec>
MDC_INLINE void in_register(vec& v) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

// Channels per grad_weight task block, whatever the ISA (the blocks fix the summation order).
constexpr int64_t kGradWeightBlock = 256;
// Aim for this many grad_weight tasks (blocks x row chunks), whatever the thread count.
constexpr int64_t kGradWeightTasks = 64;

template <typename vec, typename acc_t>
constexpr int lanes() {
  return static_cast<int>(sizeof(vec) / sizeof(acc_t));
}

// Bits of the float equal to the fp16 values whose bits are in h (lanes of uint32): c10's exact
// fp16_ieee_to_fp32_value, lane-parallel (normals rescaled by 2^-112, subnormals through a magic
// bias, inf/nan kept by the exponent rescaling).
template <typename u32v, typename f32v>
MDC_INLINE u32v half_bits_to_float_bits(const u32v& h) {
  const u32v w = h << 16;
  const u32v sign = w & 0x80000000u;
  const u32v two_w = w + w;
  f32v normalized;
  const u32v nbits = (two_w >> 4) + (0xE0u << 23);
  __builtin_memcpy(&normalized, &nbits, sizeof(nbits));
  normalized *= 0x1.0p-112f;
  f32v denormalized;
  const u32v dbits = (two_w >> 17) | (126u << 23);
  __builtin_memcpy(&denormalized, &dbits, sizeof(dbits));
  denormalized -= 0.5f;
  u32v nb, db;
  __builtin_memcpy(&nb, &normalized, sizeof(nb));
  __builtin_memcpy(&db, &denormalized, sizeof(db));
  const u32v is_denormal = two_w < (1u << 27);  // all ones where true
  return sign | (db & is_denormal) | (nb & ~is_denormal);
}

// Loads sizeof(vec) / sizeof(acc_t) consecutive values of storage type in_t as a vec of acc_t
// (vec may be acc_t itself: one value). fp16/bf16 are widened exactly (as c10 converts them).
template <typename vec, typename acc_t, typename in_t>
MDC_INLINE vec vload_in(const in_t* p) {
  if constexpr (std::is_same<in_t, acc_t>::value) {
    return vload<vec, acc_t>(p);
  } else if constexpr (std::is_same<vec, acc_t>::value) {
    return static_cast<acc_t>(*p);
  } else {
    static_assert(std::is_same<acc_t, float>::value && sizeof(in_t) == 2, "fp16/bf16 -> float only");
    constexpr int L = lanes<vec, acc_t>();
    using u16v = typename VecOf<uint16_t, 2 * L>::type;
    using u32v = typename VecOf<uint32_t, 4 * L>::type;
    u16v h;
    __builtin_memcpy(&h, p, sizeof(h));
    u32v bits = __builtin_convertvector(h, u32v);
    if constexpr (std::is_same<in_t, c10::BFloat16>::value) {
      bits <<= 16;
    } else {
      bits = half_bits_to_float_bits<u32v, vec>(bits);
    }
    vec r;
    __builtin_memcpy(&r, &bits, sizeof(r));
    return r;
  }
}

// Where a task writes one output row: straight into the tensor when it holds the accumulation type,
// else into a row buffer (per task, reused) that end() converts to the storage dtype. This keeps
// the extra memory of fp16/bf16 at one row per thread instead of float copies of whole tensors.
template <typename acc_t, typename in_t>
struct RowOut {
  std::vector<acc_t> buf;
  in_t* dst = nullptr;
  int64_t n = 0;

  acc_t* begin(in_t* row, int64_t count) {
    if constexpr (std::is_same<in_t, acc_t>::value) {
      return row;
    } else {
      dst = row;
      n = count;
      if (static_cast<int64_t>(buf.size()) < count) buf.resize(count);
      return buf.data();
    }
  }
  void end() {
    if constexpr (!std::is_same<in_t, acc_t>::value) {
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<in_t>(buf[i]);
    }
  }
};

// Calls f.template step<vec, V>(c) over the channels [c0, c1): blocks of VMax full vectors, then
// single full vectors, at most one half vector (AVX2/AVX-512), then single channels.
template <typename Isa, typename acc_t, int VMax, typename F>
MDC_INLINE void channel_steps(int64_t c0, int64_t c1, const F& f) {
  using full = typename VecOf<acc_t, Isa::bytes>::type;
  constexpr int L = lanes<full, acc_t>();
  int64_t c = c0;
  for (; c + VMax * L <= c1; c += VMax * L) f.template step<full, VMax>(c);
  if constexpr (VMax > 1) {
    for (; c + L <= c1; c += L) f.template step<full, 1>(c);
  }
  if constexpr (Isa::bytes >= 32 && L >= 2) {
    using half = typename VecOf<acc_t, Isa::bytes / 2>::type;
    if (c + L / 2 <= c1) {
      f.template step<half, 1>(c);
      c += L / 2;
    }
  }
  for (; c < c1; ++c) f.template step<acc_t, 1>(c);
}

// Taps [lo, hi) of a size-k kernel with dilation d whose coordinate x0 + i * d lies in [0, n).
struct TapRange {
  int lo, hi;
};

MDC_INLINE TapRange tap_range(int64_t x0, int64_t n, int k, int64_t d) {
  const int64_t lo = std::min<int64_t>(k, x0 >= 0 ? 0 : (-x0 + d - 1) / d);
  const int64_t hi = x0 <= n - 1 ? std::min<int64_t>(k, (n - 1 - x0) / d + 1) : 0;
  return TapRange{static_cast<int>(lo), static_cast<int>(std::max(lo, hi))};
}

// Outputs [a, b) of a row whose taps all lie inside [0, n): o * s - p >= 0 and
// o * s - p + (k - 1) * d <= n - 1; a <= b <= n_out.
struct Interior {
  int64_t a, b;
};

MDC_INLINE Interior interior(int64_t n, int64_t n_out, int64_t s, int64_t p, int k, int64_t d) {
  const int64_t a = std::min<int64_t>(n_out, (p + s - 1) / s);
  const int64_t last = n - 1 + p - (k - 1) * d;
  const int64_t b = last >= 0 ? std::min<int64_t>(n_out, last / s + 1) : 0;
  return Interior{a, std::max(a, b)};
}

// in_t: the storage type of the tensors (src, dst, input); acc_t: the accumulation type. For
// fp16/bf16 the kernels convert as they load (vload_in) and write each output row through a float
// row buffer (RowOut): no whole-tensor float copies.
template <typename acc_t, typename in_t>
struct Problem {
  using storage_t = in_t;
  Geometry g;
  int64_t src_h, src_w, dst_h, dst_w;  // src [N, src_h, src_w, C] -> dst [N, dst_h, dst_w, C]
  const in_t* src;                     // forward: input; grad_input: grad_output
  in_t* dst;                           // forward: output; grad_input: grad_input
  const acc_t* bias;                   // [C] or nullptr
  const acc_t* w[kMaxGroups];          // packed [k*k, C_g] (flipped for grad_input at stride 1)
  // grad_weight: src is grad_output, `input` the input; partial sums [chunks, total] where group
  // g's [k*k, C_g] block starts at part_offset[g].
  const in_t* input;
  acc_t* partial;
  int64_t part_offset[kMaxGroups];
  int64_t part_total, chunks, rows_per_chunk;
  const std::vector<std::array<int64_t, 3>>* blocks;  // (group, first channel, end channel)
};

// ---- forward (and grad_input at stride 1) -------------------------------------------------------
// Outputs of a row are visited pixel-major (all groups and channels of a few outputs, then the
// next outputs), so the input and output rows stream through memory in order.
// U interior outputs (sliding-window body at stride 1 or 2, or the generic one), one interior
// output, one border output.
enum class Span { kSliding1, kSliding2, kBlock, kSingle, kBorder };

template <int K, int U, typename acc_t, typename in_t>
struct ForwardRow {
  const in_t* src;
  acc_t* out;  // the output row (n, h_out, 0, 0) in the accumulation type
  const acc_t* w;
  const acc_t* bias;
  int64_t row_off;  // src offset of the (virtual) row h_out * s_h - p_h, column 0
  int64_t C, Cg, c0, row_step, col_step, src_w, sw, pw, dw;
  int i_lo, i_hi, k_rt;
  int64_t wo;  // first output of the span
  Span span;

  template <typename vec, int UU, int V>
  MDC_INLINE void run(int64_t c, int j_lo, int j_hi) const {
    constexpr int L = lanes<vec, acc_t>();
    const int k = K > 0 ? K : k_rt;
    vec acc[UU][V];
    for (int v = 0; v < V; ++v) {
      const vec b = bias ? vload<vec>(bias + c + v * L) : vec{};
      for (int u = 0; u < UU; ++u) acc[u][v] = b;
    }
    const int64_t off = row_off + (wo * sw - pw) * C + c;
    const acc_t* wc = w + (c - c0);
    for (int i = i_lo; i < i_hi; ++i) {
      const in_t* row = src + (off + i * row_step);
      const acc_t* wr = wc + static_cast<int64_t>(i) * k * Cg;
      for (int j = j_lo; j < j_hi; ++j) {
        vec wv[V];
        for (int v = 0; v < V; ++v) wv[v] = vload<vec>(wr + j * Cg + v * L);
        const in_t* s = row + j * col_step;
        for (int u = 0; u < UU; ++u) {
          for (int v = 0; v < V; ++v) acc[u][v] += wv[v] * vload_in<vec, acc_t>(s + u * sw * C + v * L);
        }
      }
    }
    for (int u = 0; u < UU; ++u) {
      for (int v = 0; v < V; ++v) vstore(out + (wo + u) * C + c + v * L, acc[u][v]);
    }
  }

  // U interior outputs at stride S, dilation 1, kernel size K known at compile time: each input
  // vector of a kernel row is loaded once and feeds every output whose window covers it (up to K
  // FMAs per load; the generic body loads one input per FMA), with the row's K weights in registers.
  template <typename vec, int S>
  MDC_INLINE void run_sliding(int64_t c) const {
    constexpr int KK = K > 0 ? K : 1;
    constexpr int X = (U - 1) * S + KK;  // input columns read by U outputs
    vec acc[U];
    const vec b = bias ? vload<vec>(bias + c) : vec{};
    MDC_UNROLL
    for (int u = 0; u < U; ++u) acc[u] = b;
    const int64_t off = row_off + (wo * S - pw) * C + c;
    const acc_t* wc = w + (c - c0);
    for (int i = i_lo; i < i_hi; ++i) {
      const in_t* row = src + (off + i * row_step);
      const acc_t* wr = wc + static_cast<int64_t>(i) * KK * Cg;
      vec wv[KK];
      MDC_UNROLL
      for (int j = 0; j < KK; ++j) wv[j] = vload<vec>(wr + j * Cg);
      const in_t* px = row;
      MDC_UNROLL
      for (int x = 0; x < X; ++x, px += C) {
        vec in = vload_in<vec, acc_t>(px);
        in_register(in);
        MDC_UNROLL
        for (int j = 0; j < KK; ++j) {
          const int t = x - j;  // u * S for the output u that reads column x with tap j
          if (t >= 0 && t % S == 0 && t / S < U) acc[t / S] += wv[j] * in;
        }
      }
    }
    MDC_UNROLL
    for (int u = 0; u < U; ++u) vstore(out + (wo + u) * C + c, acc[u]);
  }

  template <typename vec, int V>
  MDC_INLINE void step(int64_t c) const {
    const int k = K > 0 ? K : k_rt;  // the full tap range is a constant after inlining when K > 0
    // The sliding-window bodies serve full and half vectors; a single-channel tail (vec == acc_t)
    // takes the generic block body (same sums in the same order), which halves what the
    // kernel sizes x strides x vector widths cost to compile.
    constexpr bool kSlides = V == 1 && !std::is_same<vec, acc_t>::value;
    switch (span) {
      case Span::kSliding1:
        if constexpr (kSlides) {
          run_sliding<vec, 1>(c);
        } else {
          run<vec, U, V>(c, 0, k);
        }
        break;
      case Span::kSliding2:
        if constexpr (kSlides) {
          run_sliding<vec, 2>(c);
        } else {
          run<vec, U, V>(c, 0, k);
        }
        break;
      case Span::kBlock: run<vec, U, V>(c, 0, k); break;
      case Span::kSingle: run<vec, 1, V>(c, 0, k); break;
      case Span::kBorder: {
        const TapRange jr = tap_range(wo * sw - pw, src_w, k, dw);
        run<vec, 1, V>(c, jr.lo, jr.hi);
        break;
      }
    }
  }
};

// Per output row and group: the group's valid kernel rows and its interior outputs.
struct RowGroup {
  int64_t h0;
  TapRange ir;
  Interior in;
};

template <typename Isa, typename acc_t, typename in_t>
MDC_INLINE void forward_span(const Problem<acc_t, in_t>& p, const RowGroup& rg, int gi, int64_t n, acc_t* out_row,
                             int64_t wo, Span span) {
  constexpr int U = NhwcBlock<Isa>::U, V = NhwcBlock<Isa>::V;
  const Geometry& g = p.g;
  const int64_t C = g.channels;
  const int k = g.kernel[gi];
  const int64_t c0 = g.group_begin[gi], c1 = g.group_begin[gi + 1];
  MDC_DISPATCH_K(k, {
    // The sliding-window body when it applies (K known, dilation 1, stride 1 or 2): one vector of
    // channels per step.
    if (span == Span::kBlock && K_ > 0 && g.dil_w == 1 && (g.stride_w == 1 || g.stride_w == 2)) {
      span = g.stride_w == 1 ? Span::kSliding1 : Span::kSliding2;
    }
    const ForwardRow<K_, U, acc_t, in_t> f{p.src, out_row, p.w[gi], p.bias,
                                     (n * p.src_h + rg.h0) * p.src_w * C, C, c1 - c0, c0, g.dil_h * p.src_w * C,
                                     g.dil_w * C, p.src_w, g.stride_w, g.pad_w(k), g.dil_w, rg.ir.lo, rg.ir.hi, k,
                                     wo, span};
    if (span == Span::kSliding1 || span == Span::kSliding2) {
      channel_steps<Isa, acc_t, 1>(c0, c1, f);
    } else {
      channel_steps<Isa, acc_t, V>(c0, c1, f);
    }
  });
}

// Software prefetch of the input pixels (all channels, every kernel row of the largest kernel)
// that the output block starting at `wo` reads: issued kPrefetchBlocks blocks ahead, one every
// kPrefetchStride bytes (the hardware prefetcher fetches the lines between), only for images
// larger than kPrefetchMinBytes (smaller ones stay in L2, where the prefetches only cost
// instructions). Measured 5-20% on the memory-bound k=3 layers at 128^2.
constexpr int kPrefetchBlocks = 2;
constexpr int64_t kPrefetchStride = 128;
constexpr int64_t kPrefetchMinBytes = int64_t(2) << 20;

template <typename acc_t, typename in_t>
MDC_INLINE void prefetch_block(const Problem<acc_t, in_t>& p, const RowGroup& rg, int gi, int64_t n, int64_t wo, int U) {
  const Geometry& g = p.g;
  const int64_t x0 = std::max<int64_t>(0, wo * g.stride_w - g.pad_w(g.kernel[gi]));
  const int64_t x1 = std::min<int64_t>(p.src_w, x0 + U * g.stride_w);
  if (x0 >= x1) return;
  const int64_t bytes = (x1 - x0) * g.channels * static_cast<int64_t>(sizeof(in_t));
  for (int i = rg.ir.lo; i < rg.ir.hi; ++i) {
    const char* base = reinterpret_cast<const char*>(
        p.src + ((n * p.src_h + rg.h0 + i * g.dil_h) * p.src_w + x0) * g.channels);
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t o = 0; o < bytes; o += kPrefetchStride) __builtin_prefetch(base + o, 0, 3);
#else
    (void)base;
    (void)bytes;
#endif
  }
}

// Outputs [begin, end) of a row, every step-th one starting a span of this kind.
struct RowSegment {
  int64_t begin, end, step;
  Span span;
};

template <typename Isa, typename acc_t, typename in_t>
MDC_INLINE void forward_tasks(const Problem<acc_t, in_t>& p, int64_t begin, int64_t end) {
  constexpr int U = NhwcBlock<Isa>::U;
  const Geometry& g = p.g;
  RowGroup rg[kMaxGroups];
  const bool prefetch = p.src_h * p.src_w * g.channels * static_cast<int64_t>(sizeof(in_t)) > kPrefetchMinBytes;
  RowOut<acc_t, in_t> row_out;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / p.dst_h, ho = task % p.dst_h;
    acc_t* out = row_out.begin(p.dst + task * p.dst_w * g.channels, p.dst_w * g.channels);
    // Outputs [a, b) are interior for every group; the rest take the clipped path.
    int64_t a = 0, b = p.dst_w;
    int gmax = 0;  // the group with the largest kernel (most input rows)
    for (int gi = 0; gi < g.num_groups; ++gi) {
      const int k = g.kernel[gi];
      rg[gi].h0 = ho * g.stride_h - g.pad_h(k);
      rg[gi].ir = tap_range(rg[gi].h0, p.src_h, k, g.dil_h);
      rg[gi].in = interior(p.src_w, p.dst_w, g.stride_w, g.pad_w(k), k, g.dil_w);
      if (k > g.kernel[gmax]) gmax = gi;
      a = std::max(a, rg[gi].in.a);
      b = std::min(b, rg[gi].in.b);
    }
    b = std::max(a, b);
    // The row's spans in order: border outputs [0, a); blocks of U interior outputs; the rest of
    // the interior as one more block ending at b (it recomputes a few outputs of the previous
    // block: same arithmetic, same bits) or, when the interior is narrower than a block, as single
    // outputs; border outputs [b, W_out). One call site of forward_span, so its bodies are
    // compiled once per ISA, not once per kind of span.
    const int64_t blocks_end = a + (b - a) / U * U;
    const bool tail_block = blocks_end < b && b - a >= U;
    const RowSegment segments[4] = {
        {0, a, 1, Span::kBorder},
        {a, blocks_end, U, Span::kBlock},
        tail_block ? RowSegment{b - U, b - U + 1, 1, Span::kBlock} : RowSegment{blocks_end, b, 1, Span::kSingle},
        {b, p.dst_w, 1, Span::kBorder}};
    for (const RowSegment& s : segments) {
      for (int64_t wo = s.begin; wo < s.end; wo += s.step) {
        if (prefetch && s.span == Span::kBlock) prefetch_block(p, rg[gmax], gmax, n, wo + kPrefetchBlocks * U, U);
        for (int gi = 0; gi < g.num_groups; ++gi) forward_span<Isa>(p, rg[gi], gi, n, out, wo, s.span);
      }
    }
    row_out.end();
  }
}

// ---- grad_input at stride > 1: gather -------------------------------------------------------------
template <typename acc_t, typename in_t>
struct GatherPixel {
  const in_t* grad_out;
  acc_t* dst;  // grad_input at (n, h, x, 0), in the accumulation type (a row buffer for fp16/bf16)
  const acc_t* w;
  int64_t c0;
  const int64_t* src_off;  // grad_output offsets of the contributing outputs
  const int64_t* w_off;    // their taps' offsets in the packed weights
  int taps;

  template <typename vec, int V>
  MDC_INLINE void step(int64_t c) const {
    constexpr int L = lanes<vec, acc_t>();
    vec acc[V];
    for (int v = 0; v < V; ++v) acc[v] = vec{};
    const acc_t* wc = w + (c - c0);
    for (int t = 0; t < taps; ++t) {
      const in_t* s = grad_out + src_off[t] + c;
      const acc_t* wt = wc + w_off[t];
      for (int v = 0; v < V; ++v) acc[v] += vload<vec>(wt + v * L) * vload_in<vec, acc_t>(s + v * L);
    }
    for (int v = 0; v < V; ++v) vstore(dst + c + v * L, acc[v]);
  }
};

template <typename Isa, typename acc_t, typename in_t>
MDC_INLINE void gather_tasks(const Problem<acc_t, in_t>& p, int64_t begin, int64_t end) {
  const Geometry& g = p.g;
  const int64_t C = g.channels, H = g.height, W = g.width, Ho = g.out_h, Wo = g.out_w;
  const int kk_max = g.max_kernel * g.max_kernel;
  std::vector<int64_t> buf(4 * static_cast<size_t>(g.max_kernel) + 2 * static_cast<size_t>(kk_max));
  int64_t* rows = buf.data();             // [k] grad_output row offsets of the valid taps i
  int64_t* ti = rows + g.max_kernel;      // [k] those i
  int64_t* cols = ti + g.max_kernel;      // [k] column offsets of the valid taps j
  int64_t* tj = cols + g.max_kernel;      // [k] those j
  int64_t* src_off = tj + g.max_kernel;   // [k*k]
  int64_t* w_off = src_off + kk_max;      // [k*k]
  RowOut<acc_t, in_t> row_out;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / H, h = task % H;
    acc_t* out = row_out.begin(p.dst + task * W * C, W * C);
    for (int gi = 0; gi < g.num_groups; ++gi) {
      const int k = g.kernel[gi];
      const int64_t c0 = g.group_begin[gi], c1 = g.group_begin[gi + 1], Cg = c1 - c0;
      const int64_t ph = g.pad_h(k), pw = g.pad_w(k);
      int ni = 0;
      for (int i = 0; i < k; ++i) {
        const int64_t t = h + ph - i * g.dil_h;
        if (t < 0 || t % g.stride_h != 0 || t / g.stride_h >= Ho) continue;
        rows[ni] = (n * Ho + t / g.stride_h) * Wo * C;
        ti[ni++] = i;
      }
      for (int64_t x = 0; x < W; ++x) {
        int nj = 0;
        for (int j = 0; j < k; ++j) {
          const int64_t t = x + pw - j * g.dil_w;
          if (t < 0 || t % g.stride_w != 0 || t / g.stride_w >= Wo) continue;
          cols[nj] = (t / g.stride_w) * C;
          tj[nj++] = j;
        }
        int taps = 0;
        for (int a = 0; a < ni; ++a) {
          for (int b = 0; b < nj; ++b) {
            src_off[taps] = rows[a] + cols[b];
            w_off[taps++] = (ti[a] * k + tj[b]) * Cg;
          }
        }
        const GatherPixel<acc_t, in_t> f{p.src, out + x * C, p.w[gi], c0, src_off, w_off, taps};
        channel_steps<Isa, acc_t, 2>(c0, c1, f);
      }
    }
    row_out.end();
  }
}

// ---- grad_weight ----------------------------------------------------------------------------------
//   gw[c, i, j] = sum_{n, ho, wo} grad_out[n, ho, wo, c] * input[n, ho*s_h - p_h + i*d_h, wo*s_w - p_w + j*d_w, c]
// S: the horizontal stride when the sliding-window loop applies (K known, dilation 1, stride 1 or
// 2), else 0 (one input load per FMA). U: outputs per sliding block.
template <int K, int S, int U, typename acc_t, typename in_t>
struct GradWeightRow {
  const in_t* go;  // grad_output at (n, ho, 0, 0)
  const in_t* input;
  acc_t* part;      // this chunk's partial sums of the group, [k*k, C_g]
  int64_t row_off;  // input offset of the (virtual) row ho * s_h - p_h, column 0
  int64_t C, Cg, c0, row_step, col_step, src_w, sw, pw, dw, n_out;
  int i_lo, i_hi, k_rt;
  Interior in;

  template <typename vec, int V>
  MDC_INLINE void step(int64_t c) const {
    static_assert(V == 1, "grad_weight steps are single vectors");
    const int k = K > 0 ? K : k_rt;
    acc_t* pc = part + (c - c0);
    // Outputs handled by the register-blocked loop (none when K is only known at run time).
    const int64_t a = K > 0 ? in.a : n_out, b = K > 0 ? in.b : n_out;
    for (int i = i_lo; i < i_hi; ++i) {
      const int64_t roff = row_off + i * row_step + c;
      acc_t* pi = pc + static_cast<int64_t>(i) * k * Cg;
      if constexpr (K > 0 && S > 0 && !std::is_same<vec, acc_t>::value) {  // (a one-channel tail: below)
        // Sliding window: U grad_output vectors in registers, each input vector of the row loaded
        // once and used by every (output, tap) pair that reads it; two accumulator sets (even and
        // odd outputs) when registers allow, for more independent FMA chains.
        constexpr int NS = U + 2 * K + 2 <= (sizeof(vec) >= 64 ? 32 : 16) ? 2 : 1;
        constexpr int X = (U - 1) * S + K;
        vec acc[NS][K];
        MDC_UNROLL
        for (int q = 0; q < NS; ++q) {
          MDC_UNROLL
          for (int j = 0; j < K; ++j) acc[q][j] = vec{};
        }
        int64_t wo = a;
        for (; wo + U <= b; wo += U) {
          vec gv[U];
          MDC_UNROLL
          for (int u = 0; u < U; ++u) {
            gv[u] = vload_in<vec, acc_t>(go + (wo + u) * C + c);
            in_register(gv[u]);
          }
          const in_t* px = input + (roff + (wo * S - pw) * C);
          MDC_UNROLL
          for (int x = 0; x < X; ++x, px += C) {
            vec v = vload_in<vec, acc_t>(px);
            in_register(v);
            MDC_UNROLL
            for (int j = 0; j < K; ++j) {
              const int t = x - j;  // u * S for the output u that reads column x with tap j
              if (t >= 0 && t % S == 0 && t / S < U) acc[(t / S) % NS][j] += gv[t / S] * v;
            }
          }
        }
        for (; wo < b; ++wo) {
          const vec gv1 = vload_in<vec, acc_t>(go + wo * C + c);
          const in_t* src = input + (roff + (wo * S - pw) * C);
          for (int j = 0; j < K; ++j) acc[0][j] += gv1 * vload_in<vec, acc_t>(src + j * C);
        }
        for (int j = 0; j < K; ++j) {
          vec t = acc[0][j];
          if constexpr (NS > 1) t += acc[1][j];
          vstore(pi + j * Cg, vload<vec>(pi + j * Cg) + t);
        }
      } else if constexpr (K > 0) {
        constexpr int WU = K <= 3 ? 3 : (K <= 5 ? 2 : 1);  // independent accumulator sets
        vec acc[WU][K];
        for (int u = 0; u < WU; ++u) {
          for (int j = 0; j < K; ++j) acc[u][j] = vec{};
        }
        int64_t wo = a;
        for (; wo + WU <= b; wo += WU) {
          for (int u = 0; u < WU; ++u) {
            const vec gv = vload_in<vec, acc_t>(go + (wo + u) * C + c);
            const in_t* s = input + (roff + ((wo + u) * sw - pw) * C);
            for (int j = 0; j < K; ++j) acc[u][j] += gv * vload_in<vec, acc_t>(s + j * col_step);
          }
        }
        for (; wo < b; ++wo) {
          const vec gv = vload_in<vec, acc_t>(go + wo * C + c);
          const in_t* s = input + (roff + (wo * sw - pw) * C);
          for (int j = 0; j < K; ++j) acc[0][j] += gv * vload_in<vec, acc_t>(s + j * col_step);
        }
        for (int j = 0; j < K; ++j) {
          vec t = acc[0][j];
          for (int u = 1; u < WU; ++u) t += acc[u][j];
          vstore(pi + j * Cg, vload<vec>(pi + j * Cg) + t);
        }
      }
      // Border outputs (every output when K is a run-time value): clipped taps, straight into the
      // partial sums.
      for (int64_t wo = 0; wo < n_out; ++wo) {
        if (wo == a) wo = b;
        if (wo >= n_out) break;
        const vec gv = vload_in<vec, acc_t>(go + wo * C + c);
        const int64_t x0 = wo * sw - pw;
        const TapRange jr = tap_range(x0, src_w, k, dw);
        const in_t* s = input + (roff + x0 * C);
        for (int j = jr.lo; j < jr.hi; ++j) {
          vstore(pi + j * Cg, vload<vec>(pi + j * Cg) + gv * vload_in<vec, acc_t>(s + j * col_step));
        }
      }
    }
  }
};

template <typename Isa, typename acc_t, typename in_t>
MDC_INLINE void grad_weight_tasks(const Problem<acc_t, in_t>& p, int64_t begin, int64_t end) {
  const Geometry& g = p.g;
  const int64_t C = g.channels, H = g.height, W = g.width, Ho = g.out_h, Wo = g.out_w;
  const int64_t total_rows = g.batch * Ho;
  for (int64_t task = begin; task < end; ++task) {
    const auto& blk = (*p.blocks)[task / p.chunks];
    const int64_t chunk = task % p.chunks;
    const int gi = static_cast<int>(blk[0]);
    const int64_t cb0 = blk[1], cb1 = blk[2];
    const int k = g.kernel[gi];
    const int64_t c0 = g.group_begin[gi], Cg = g.group_begin[gi + 1] - c0;
    acc_t* part = p.partial + chunk * p.part_total + p.part_offset[gi];
    for (int64_t tap = 0; tap < int64_t(k) * k; ++tap) {
      std::fill(part + tap * Cg + (cb0 - c0), part + tap * Cg + (cb1 - c0), acc_t(0));
    }
    const Interior in = interior(W, Wo, g.stride_w, g.pad_w(k), k, g.dil_w);
    const int64_t q1 = std::min(total_rows, (chunk + 1) * p.rows_per_chunk);
    for (int64_t q = chunk * p.rows_per_chunk; q < q1; ++q) {
      const int64_t n = q / Ho, ho = q % Ho;
      const int64_t h0 = ho * g.stride_h - g.pad_h(k);
      const TapRange ir = tap_range(h0, H, k, g.dil_h);
      const int slide = g.dil_w == 1 && g.stride_w <= 2 ? static_cast<int>(g.stride_w) : 0;
#define MDC_GW_ROW(S_)                                                                                          \
  do {                                                                                                          \
    const GradWeightRow<K_, S_, NhwcBlock<Isa>::U, acc_t, in_t> f{                                                    \
        p.src + (n * Ho + ho) * Wo * C, p.input, part, (n * H + h0) * W * C, C, Cg, c0, g.dil_h * W * C,       \
        g.dil_w * C, W, g.stride_w, g.pad_w(k), g.dil_w, Wo, ir.lo, ir.hi, k, in};                              \
    channel_steps<Isa, acc_t, 1>(cb0, cb1, f);                                                                  \
  } while (0)
      MDC_DISPATCH_K(k, {
        if (slide == 1) {
          MDC_GW_ROW(1);
        } else if (slide == 2) {
          MDC_GW_ROW(2);
        } else {
          MDC_GW_ROW(0);
        }
      });
#undef MDC_GW_ROW
    }
  }
}

// ---- the passes (one entry point per ISA runs any of them: mixed_depthwise_conv2d_cpu_isa.h) -----
enum class NhwcPass { kForward, kGather, kGradWeight };

template <typename Isa, typename acc_t, typename in_t>
MDC_INLINE void nhwc_tasks(NhwcPass pass, const Problem<acc_t, in_t>& p, int64_t begin, int64_t end) {
  switch (pass) {
    case NhwcPass::kForward: forward_tasks<Isa>(p, begin, end); break;
    case NhwcPass::kGather: gather_tasks<Isa>(p, begin, end); break;
    case NhwcPass::kGradWeight: grad_weight_tasks<Isa>(p, begin, end); break;
  }
}

}  // namespace nhwc
}  // namespace mdc
}  // namespace hybridops
