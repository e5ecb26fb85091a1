// The fused CUDA forward of deform_conv2d (issue #16): no columns buffer in global memory. Included
// by deform_conv2d_cuda.cu inside its anonymous namespace (one translation unit, so the real and the
// emulated builds never share a symbol of it).
//
// Block (pixel tile of one image, output-channel tile of one weight group), plan from
// deform_conv2d_fused_plan.h. Per chunk of input channels (never crossing an offset group):
//   1. each thread samples its (tap, pixel) pairs for the chunk's channels into shared memory,
//      value = mask * bilinear(input plane, point) with the corners computed once per offset group
//      and kept in registers (tap_corners / BilinearCorners of deform_conv2d_kernel.h: the same
//      per-element math, NaN and border rules as the im2col path);
//   2. the chunk's weight slice goes to shared memory beside it, transposed ([row][channel]);
//   3. each thread accumulates its register tile of 2 pixels x 4 output channels: sum over
//      (channel, tap) of weight * sample, from one 64-bit and one 128-bit shared-memory load a row.
// Then bias, and one store per output. Each tensor is read and written in its own layout,
// contiguous NCHW or channels-last (FusedLayouts: the driver keeps a channels-last caller's tensors
// as they are, and the output takes the input's layout). fp16/bf16 are read in their storage type, sampled and
// accumulated in float. FMA only (portable to sm_61); fp16/bf16 on sm_80+ take the tensor-core
// variant (deform_conv2d_fused_tc_cuda.cuh) unless HYBRIDOPS_DCN_TENSOR_CORES=0.
//
// It includes nothing: deform_conv2d_cuda.cu includes deform_conv2d_fused_plan.h (and the ATen and
// launch headers) first, then this file inside hybridops::dcn::{anonymous}.
#pragma once

// Where a fused launch's tensors live (PixelLayout each: contiguous NCHW or channels-last). `output`
// is the forward's out or the backward's grad_output; the backward writes grad_input in the input's
// layout, grad_offset in the offset's and grad_mask in the mask's.
struct FusedLayouts {
  PixelLayout input, offset, mask, output;
};

// The first element of channel c of image n of the input (the corners' offsets count from it).
template <typename scalar_t>
__device__ __forceinline__ const scalar_t* input_plane(const scalar_t* input, const FusedLayouts& l, int64_t n,
                                                       int64_t c) {
  return input + n * l.input.image + c * l.input.channel;
}

// Channels-last gathers: the values of kLoadVector<scalar_t> neighbouring channels of a corner
// come in one 128-bit load (4 floats, 8 halves) where the chunk allows it; doubles stay scalar
// (2 a load would gain little and made kernel B spill). Backward kernel A, which keeps a value and
// two derivatives a channel, takes at most kGradLoadVector channels a load (8 bytes of halves): 8
// would cost it 40 registers, half its occupancy.
constexpr int kLoadBytes = 16;
template <typename scalar_t>
constexpr int kLoadVector = sizeof(scalar_t) >= 8 ? 1 : kLoadBytes / static_cast<int>(sizeof(scalar_t));
constexpr int kGradLoadVectorMax = 4;
template <typename scalar_t>
constexpr int kGradLoadVector = kLoadVector<scalar_t> < kGradLoadVectorMax ? kLoadVector<scalar_t> : kGradLoadVectorMax;

template <typename scalar_t, int V>
struct alignas(sizeof(scalar_t) * V) LoadVec {
  scalar_t v[V];
};

// Whether the cc channels from `plane` (a chunk's first channel) are gathered V at a time (one load
// of V values a corner): a channels-last input (channels contiguous), cc and the pixel stride whole
// vectors, `plane` aligned to a vector (then every corner's run is). The same for a whole block.
template <int V, typename scalar_t>
__device__ __forceinline__ bool vector_gather(const FusedLayouts& l, const scalar_t* plane, int cc) {
  return V > 1 && l.input.channel == 1 && cc % V == 0 && l.input.pixel % V == 0 &&
         reinterpret_cast<uintptr_t>(plane) % (sizeof(scalar_t) * V) == 0;
}

// gather_step's vector path: channels ci .. ci + V - 1 of a channels-last chunk, one load a corner.
template <bool WithGrad, typename scalar_t, typename acc_t, typename index_t, int V>
__device__ __forceinline__ int gather_vector_step(const BilinearCorners<acc_t, index_t>& c4, const scalar_t* plane,
                                                  int ci, acc_t (&v)[V], acc_t (&dy)[V], acc_t (&dx)[V]) {
#pragma unroll
  for (int e = 0; e < V; ++e) {
    v[e] = 0;
    dy[e] = dx[e] = c4.outside;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (c4.idx[i] < 0) continue;
    const scalar_t* src = plane + ci + c4.idx[i];
#ifdef HYBRIDOPS_CUDA_EMULATION  // the GPU faults on a misaligned vector load; the CPU would not
    TORCH_CHECK(reinterpret_cast<uintptr_t>(src) % alignof(LoadVec<scalar_t, V>) == 0,
                "hybridops CUDA emulation: a misaligned ", sizeof(LoadVec<scalar_t, V>), "-byte vector load");
#endif
    const LoadVec<scalar_t, V> x = *reinterpret_cast<const LoadVec<scalar_t, V>*>(src);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const acc_t p = static_cast<acc_t>(x.v[e]);
      v[e] += c4.w[i] * p;
      if constexpr (WithGrad) {
        dy[e] += c4.dwdy[i] * p;
        dx[e] += c4.dwdx[i] * p;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < V; ++e) v[e] = c4.inside ? v[e] : c4.outside;
  return V;
}

// One step of a chunk's gather from `plane` (the chunk's first channel; channels channel_step
// apart): BilinearCorners::sample (WithGrad: and sample_with_grad's d/dy and d/dx) of channel ci
// into v[0] (dy[0], dx[0]), or, where vector_gather<V> says so, of channels ci .. ci + V - 1 into
// v[0 .. V) from one load a corner. Returns the channels it produced (1 or V). Each channel's sums
// run in sample's order either way: the same bits.
template <bool WithGrad, typename scalar_t, typename acc_t, typename index_t, int V = kLoadVector<scalar_t>>
__device__ __forceinline__ int gather_step(const BilinearCorners<acc_t, index_t>& c4, const scalar_t* plane,
                                           int64_t channel_step, int ci, bool vector, acc_t (&v)[V], acc_t (&dy)[V],
                                           acc_t (&dx)[V]) {
  if constexpr (V > 1) {
    if (vector) return gather_vector_step<WithGrad>(c4, plane, ci, v, dy, dx);
  }
  if constexpr (WithGrad) {
    c4.sample_with_grad(plane + ci * channel_step, v[0], dy[0], dx[0]);
  } else {
    v[0] = c4.sample(plane + ci * channel_step);
  }
  return 1;
}

// gather_step without the derivatives.
template <typename scalar_t, typename acc_t, typename index_t, int V = kLoadVector<scalar_t>>
__device__ __forceinline__ int gather_step(const BilinearCorners<acc_t, index_t>& c4, const scalar_t* plane,
                                           int64_t channel_step, int ci, bool vector, acc_t (&v)[V]) {
  acc_t unused_dy[V], unused_dx[V];
  return gather_step<false>(c4, plane, channel_step, ci, vector, v, unused_dy, unused_dx);
}

// A (tap, pixel) pair's samples of a chunk: dst[ci * dst_step] = m * BilinearCorners::sample of channel
// ci (gather_step) for ci < cc, rounded to dst_t (the FMA kernels' float tiles, the tensor cores'
// storage type); zeros for a pair that is not `live`.
template <typename dst_t, typename scalar_t, typename acc_t, typename index_t>
__device__ __forceinline__ void sample_pair(const BilinearCorners<acc_t, index_t>& c4, bool live, acc_t m,
                                            const scalar_t* plane, int64_t channel_step, int cc, bool vector,
                                            dst_t* dst, int dst_step) {
  if (!live) {
    for (int ci = 0; ci < cc; ++ci) dst[ci * dst_step] = dst_t(0);
    return;
  }
  for (int ci = 0; ci < cc;) {
    acc_t v[kLoadVector<scalar_t>];
    const int got = gather_step(c4, plane, channel_step, ci, vector, v);
#pragma unroll
    for (int e = 0; e < kLoadVector<scalar_t>; ++e) {
      if (e < got) dst[(ci + e) * dst_step] = static_cast<dst_t>(m * v[e]);
    }
    ci += got;
  }
}

// The bilinear corners (32-bit offsets from the plane, scaled by the input's pixel stride: the plan
// and the driver keep an image plane, and a channels-last image, under 2^31 elements) and the
// modulation of this thread's (tap, pixel) pairs q = threadIdx.x + j * kFusedThreads, for offset
// group og of image n and the pixel tile from p0; live[j] is false for pairs past the tile or image.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_pair_corners(const Geometry& g, const FusedLayouts& l, const scalar_t* offset,
                                                  const scalar_t* mask, int64_t n, int64_t og, int64_t p0, int tile_p,
                                                  BilinearCorners<acc_t, int32_t> (&corners)[kFusedPairs],
                                                  acc_t (&modulation)[kFusedPairs], bool (&live)[kFusedPairs]) {
  const int pairs = static_cast<int>(g.taps()) * tile_p;
#pragma unroll
  for (int j = 0; j < kFusedPairs; ++j) {
    const int q = threadIdx.x + j * kFusedThreads;
    live[j] = q < pairs && p0 + q % tile_p < g.out_pixels();
    if (live[j]) {
      const SampleItem<int64_t> it{n, og, q / tile_p, p0 + q % tile_p};
      corners[j] = with_index_type<int32_t>(
          tap_corners_laid_out<scalar_t, acc_t>(g, offset, l.offset, mask, l.mask, it, modulation[j]), l.input.pixel);
    }
  }
}

// What a fused forward block computes (both the FMA and the tensor-core kernel): output pixels
// p0 .. p0 + tile_p of image n, times output channels co0 .. co0 + tile_co (within the group) of
// weight group gi, whose input channels are c_begin .. c_end.
struct ForwardBlock {
  int64_t P, n, p0, cin_g, cout_g, gi, co0, c_begin, c_end, cpg;
};

__device__ __forceinline__ ForwardBlock forward_block(const Geometry& g, int tile_p, int tile_co, int64_t cout,
                                                      int64_t groups) {
  ForwardBlock b;
  b.P = g.out_pixels();
  const int64_t tiles_p = ceil_div(b.P, tile_p);
  b.n = blockIdx.x / tiles_p;
  b.p0 = (blockIdx.x - b.n * tiles_p) * tile_p;
  b.cin_g = g.channels / groups;
  b.cout_g = cout / groups;
  const int64_t co_tiles = ceil_div(b.cout_g, tile_co);
  b.gi = blockIdx.y / co_tiles;
  b.co0 = (blockIdx.y - b.gi * co_tiles) * tile_co;
  b.c_begin = b.gi * b.cin_g;
  b.c_end = b.c_begin + b.cin_g;
  b.cpg = g.channels_per_offset_group();
  return b;
}

// The channels of the chunk from c0: at most chunk_c, never past the group's end or into the next
// offset group.
__device__ __forceinline__ int forward_chunk(const ForwardBlock& b, int64_t c0, int chunk_c) {
  int64_t chunk = b.c_end - c0 < chunk_c ? b.c_end - c0 : chunk_c;
  const int64_t og_end = (c0 / b.cpg + 1) * b.cpg;
  return static_cast<int>(og_end - c0 < chunk ? og_end - c0 : chunk);
}

// N values of shared memory read as one vector load (64 or 128 bits; two 128-bit loads for 4 doubles).
template <typename T, int N>
struct alignas(sizeof(T) * N > 16 ? 16 : sizeof(T) * N) SmemVec {
  T v[N];
};

// One step of a register-tiled micro-GEMM: acc[a][b] += w[a] * s[b], from one RX-vector load of `w`
// and one PX-vector load of `s` in shared memory (the forward's and backward kernel A's GEMMs).
template <int RX, int PX, typename acc_t>
__device__ __forceinline__ void register_tile_fma(acc_t (&acc)[RX * PX], const acc_t* w, const acc_t* s) {
  const SmemVec<acc_t, RX> wv = *reinterpret_cast<const SmemVec<acc_t, RX>*>(w);
  const SmemVec<acc_t, PX> sv = *reinterpret_cast<const SmemVec<acc_t, PX>*>(s);
#pragma unroll
  for (int a = 0; a < RX; ++a) {
#pragma unroll
    for (int b = 0; b < PX; ++b) acc[a * PX + b] += wv.v[a] * sv.v[b];
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kFusedThreads)
    fused_forward_kernel(Geometry g, FusedLayouts l, FusedPlan plan, const scalar_t* __restrict__ input,
                         const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                         const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias,
                         scalar_t* __restrict__ out, int64_t cout, int64_t groups) {
  using acc_t = at::opmath_type<scalar_t>;
  HYBRIDOPS_DYNAMIC_SHARED(unsigned char, smem_raw);
  constexpr int PX = kFusedPixelsPerThread, CX = kFusedChannelsPerThread;
  const int tile_p = plan.tile_p, tile_co = plan.tile_co;
  // The weight tile's rows: co_rows channels (tile_co rounded up to CX) and CX more of padding, so
  // the transposing stores below hit 32 different banks (fused_weight_row_stride).
  const int co_rows = fused_rows_in_tiles(tile_co), ld_w = fused_weight_row_stride(tile_co);
  const int K = static_cast<int>(g.taps());
  acc_t* samples = reinterpret_cast<acc_t*>(smem_raw);       // [chunk_c * K][tile_p]
  acc_t* wtile = samples + plan.chunk_c * K * tile_p;         // [chunk_c * K][ld_w]
  const int t = threadIdx.x;
  const ForwardBlock blk = forward_block(g, tile_p, tile_co, cout, groups);
  const int64_t P = blk.P, n = blk.n, p0 = blk.p0, cin_g = blk.cin_g, cout_g = blk.cout_g;
  const int64_t gi = blk.gi, co0 = blk.co0, c_begin = blk.c_begin, c_end = blk.c_end, cpg = blk.cpg;
  const int pairs = K * tile_p;
  // This thread's register tile: pixels my_p .. my_p + PX - 1, channels my_co .. my_co + CX - 1 of
  // the block's tiles (threads past the last channel tile only sample).
  const int my_p = t % (tile_p / PX) * PX, my_co = t / (tile_p / PX) * CX;
  const bool computes = my_co < tile_co;

  BilinearCorners<acc_t, int32_t> corners[kFusedPairs];  // plane offsets fit 32 bits (the plan checks)
  acc_t modulation[kFusedPairs];
  bool live[kFusedPairs];
  acc_t acc[kFusedOutputs];
#pragma unroll
  for (int j = 0; j < kFusedOutputs; ++j) acc[j] = 0;

  int64_t current_og = -1;
  for (int64_t c0 = c_begin; c0 < c_end;) {
    const int64_t og = c0 / cpg;
    const int cc = forward_chunk(blk, c0, plan.chunk_c);
    if (og != current_og) {  // the corners of my pairs for this offset group
      load_pair_corners(g, l, offset, mask, n, og, p0, tile_p, corners, modulation, live);
      current_og = og;
    }
    __syncthreads();  // the previous chunk's tiles are consumed
    const scalar_t* plane = input_plane(input, l, n, c0);
    const bool vector = vector_gather<kLoadVector<scalar_t>>(l, plane, cc);
#pragma unroll
    for (int j = 0; j < kFusedPairs; ++j) {
      const int q = t + j * kFusedThreads;
      if (q >= pairs) continue;
      sample_pair(corners[j], live[j], modulation[j], plane, l.input.channel, cc, vector, samples + q, pairs);
    }
    const int rk = cc * K;  // the chunk's (channel, tap) rows
    // The weight slice, transposed: a warp's 32 items are CX channels x 8 consecutive rows r, so
    // its global reads are CX runs of 8 weights and its stores fall in 32 different banks.
    for (int i = t; i < co_rows * rk; i += kFusedThreads) {
      const int co_lo = i % CX, rest = i / CX;
      const int r = rest % rk, co = rest / rk * CX + co_lo;
      const int64_t oc = gi * cout_g + co0 + co;
      wtile[r * ld_w + co] = co < tile_co && co0 + co < cout_g
                                 ? static_cast<acc_t>(weight[oc * cin_g * K + (c0 - c_begin) * K + r])
                                 : acc_t(0);
    }
    __syncthreads();
    // The register-tiled micro-GEMM: per (channel, tap) row one PX-sample and one CX-weight vector
    // load feed PX x CX FMAs, each output summed over r in order (the same bits as one FMA a load).
    if (computes) {
      const acc_t* s_row = samples + my_p;
      const acc_t* w_row = wtile + my_co;
      for (int r = 0; r < rk; ++r, s_row += tile_p, w_row += ld_w) register_tile_fma<CX, PX>(acc, w_row, s_row);
    }
    c0 += cc;
  }
  if (!computes) return;
#pragma unroll
  for (int a = 0; a < CX; ++a) {
    const int64_t co = co0 + my_co + a;
    if (my_co + a >= tile_co || co >= cout_g) continue;
    const int64_t oc = gi * cout_g + co;
    const acc_t b_oc = bias ? static_cast<acc_t>(bias[oc]) : acc_t(0);
#pragma unroll
    for (int b = 0; b < PX; ++b) {
      const int64_t p = p0 + my_p + b;
      if (p < P) out[l.output.at(n, oc, p)] = static_cast<scalar_t>(acc[a * PX + b] + b_oc);
    }
  }
}

// Launches the FMA kernel into `out` (forward_output(a), layouts `l`) with `plan` on `grid`
// (forward_block's layout); fused_forward_cuda (deform_conv2d_fused_tc_cuda.cuh) decides between it
// and the tensor-core kernel. `bias`: contiguous, or undefined.
inline void launch_fused_forward_fma(const ForwardArgs& a, const FusedLayouts& l, const FusedPlan& plan, dim3 grid,
                                     const at::Tensor& bias, at::Tensor& out) {
  const Geometry& g = a.g;
  const int64_t cout = a.weight.size(0), groups = a.groups;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.input.scalar_type(), "deform_conv2d_fused_cuda", [&] {
    HYBRIDOPS_LAUNCH(grid, kFusedThreads, plan.smem_bytes, stream, fused_forward_kernel<scalar_t>)(
        g, l, plan, a.input.data_ptr<scalar_t>(), a.offset.data_ptr<scalar_t>(),
        g.use_mask ? a.mask->data_ptr<scalar_t>() : nullptr, a.weight.data_ptr<scalar_t>(),
        bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), cout, groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}
