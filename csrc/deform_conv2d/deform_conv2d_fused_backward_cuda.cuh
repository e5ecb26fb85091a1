// The fused CUDA backward of deform_conv2d (issue #16): no grad_columns or columns buffer in global
// memory. Plan and algorithm: FusedBackwardPlan in deform_conv2d_fused_plan.h. Included, like
// deform_conv2d_fused_cuda.cuh, by deform_conv2d_cuda.cu inside hybridops::dcn::{anonymous}.
//
// The per-element math is deform_conv2d_kernel.h's (tap_corners, BilinearCorners::sample and
// sample_with_grad), with the im2col path's rules: grad_offset = m * sum_c gcol * d sample,
// grad_mask = sum_c gcol * sample, grad_input scatter only from points inside the plane with m != 0.
#pragma once

// grad_output of image n, output channels c_first .. c_first + cout_g and pixels p0 .. p0 + tile_p,
// into the tile [cout_g][tile_p] (zero past the image), walking grad_output's contiguous dimension
// fastest (pixels in NCHW, channels in channels-last) so that a warp's loads coalesce.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_grad_out_tile(const FusedLayouts& l, const scalar_t* grad_out, int64_t n,
                                                   int64_t c_first, int64_t cout_g, int64_t p0, int tile_p, int64_t P,
                                                   acc_t* tile) {
  const bool channels_fastest = l.output.channel == 1;
  for (int i = threadIdx.x; i < cout_g * tile_p; i += kFusedThreads) {
    const int co = channels_fastest ? static_cast<int>(i % cout_g) : i / tile_p;
    const int pp = channels_fastest ? static_cast<int>(i / cout_g) : i % tile_p;
    const int64_t p = p0 + pp;
    tile[co * tile_p + pp] = p < P ? static_cast<acc_t>(grad_out[l.output.at(n, c_first + co, p)]) : acc_t(0);
  }
}

// A: one block per (image, pixel tile). Chunks of channels (within one weight group and one offset
// group): grad_columns[chunk * K][tile_p] = W_chunk^T @ grad_out tile (register-tiled, as the
// forward's micro-GEMM: 4 rows x 2 pixels a thread), then each thread, for its
// (tap, pixel) pairs, reduces the offset/mask gradients over the chunk's channels in registers and
// scatters grad_input with `add` (AtomicAdd, or FixedPointAdd under deterministic mode).
template <typename scalar_t, typename grad_t, typename AddFn>
__global__ void __launch_bounds__(kFusedThreads)
    fused_backward_sampling_kernel(Geometry g, FusedLayouts l, FusedBackwardPlan plan,
                                   const scalar_t* __restrict__ input,
                                   const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                                   const scalar_t* __restrict__ weight, const scalar_t* __restrict__ grad_out,
                                   scalar_t* __restrict__ grad_offset, scalar_t* __restrict__ grad_mask,
                                   grad_t* grad_input, AddFn add, int64_t cout, int64_t groups) {
  using acc_t = at::opmath_type<scalar_t>;
  HYBRIDOPS_DYNAMIC_SHARED(unsigned char, smem_raw);
  const int tile_p = plan.tile_p, K = static_cast<int>(g.taps());
  const int64_t cin_g = g.channels / groups, cout_g = cout / groups;
  constexpr int PX = kFusedPixelsPerThread, RX = kFusedChannelsPerThread;  // a thread's register tile
  const int rows_a = fused_rows_in_tiles(plan.chunk_a * K);  // weight rows, whole register tiles
  acc_t* gout = reinterpret_cast<acc_t*>(smem_raw);     // [cout_g][tile_p]
  acc_t* wchunk = gout + cout_g * tile_p;                // [cout_g][rows_a]: the chunk's weights, transposed
  acc_t* gcol = wchunk + cout_g * rows_a;                // [chunk_a * K][tile_p]
  const int t = threadIdx.x;
  const int64_t P = g.out_pixels();
  const int64_t tiles_p = (P + tile_p - 1) / tile_p;
  const int64_t n = blockIdx.x / tiles_p;
  const int64_t p0 = (blockIdx.x - n * tiles_p) * tile_p;
  const int64_t cpg = g.channels_per_offset_group();

  BilinearCorners<acc_t, int32_t> corners[kFusedPairs];  // plane offsets fit 32 bits (the plan checks)
  acc_t modulation[kFusedPairs], gy[kFusedPairs], gx[kFusedPairs], gm[kFusedPairs];
  bool live[kFusedPairs];
  auto flush = [&](int64_t og) {  // the pairs' offset and mask gradients of offset group og
#pragma unroll
    for (int j = 0; j < kFusedPairs; ++j) {
      if (!live[j]) continue;
      const int q = t + j * kFusedThreads;
      const int64_t k = q / tile_p, p = p0 + q % tile_p;
      const int64_t oy = l.offset.at(n, og * 2 * K + 2 * k, p);
      grad_offset[oy] = static_cast<scalar_t>(gy[j] * modulation[j]);
      grad_offset[oy + l.offset.channel] = static_cast<scalar_t>(gx[j] * modulation[j]);
      if (g.use_mask) grad_mask[l.mask.at(n, og * K + k, p)] = static_cast<scalar_t>(gm[j]);
    }
  };

  int64_t current_og = -1, current_group = -1;
  for (int64_t c0 = 0; c0 < g.channels;) {
    const int64_t gi = c0 / cin_g, og = c0 / cpg;
    int64_t chunk = plan.chunk_a;
    chunk = (gi + 1) * cin_g - c0 < chunk ? (gi + 1) * cin_g - c0 : chunk;
    chunk = (og + 1) * cpg - c0 < chunk ? (og + 1) * cpg - c0 : chunk;
    const int cc = static_cast<int>(chunk), rk = cc * K;
    if (og != current_og) {
      if (current_og >= 0) flush(current_og);
      load_pair_corners(g, l, offset, mask, n, og, p0, tile_p, corners, modulation, live);
#pragma unroll
      for (int j = 0; j < kFusedPairs; ++j) gy[j] = gx[j] = gm[j] = 0;
      current_og = og;
    }
    __syncthreads();  // the previous chunk's tiles are consumed
    if (gi != current_group) {
      load_grad_out_tile(l, grad_out, n, gi * cout_g, cout_g, p0, tile_p, P, gout);
      current_group = gi;
    }
    const int rk_tiles = fused_rows_in_tiles(rk);  // the rows past rk are zero weights
    for (int i = t; i < cout_g * rk_tiles; i += kFusedThreads) {  // along the weight's rows
      const int co = i / rk_tiles, r = i - co * rk_tiles;
      wchunk[co * rows_a + r] =
          r < rk ? static_cast<acc_t>(weight[(gi * cout_g + co) * cin_g * K + (c0 - gi * cin_g) * K + r]) : acc_t(0);
    }
    __syncthreads();
    // grad_columns = W_chunk^T @ grad_out, register-tiled: RX rows x PX pixels a thread, one RX-weight
    // and one PX-grad_out vector load per output channel, each sum over co in order (as one FMA a load).
    for (int tt = t; tt < rk_tiles / RX * (tile_p / PX); tt += kFusedThreads) {
      const int r0 = tt / (tile_p / PX) * RX, q0 = tt % (tile_p / PX) * PX;
      acc_t s[RX * PX];
#pragma unroll
      for (int e = 0; e < RX * PX; ++e) s[e] = 0;
      const acc_t* w_row = wchunk + r0;
      const acc_t* g_row = gout + q0;
      for (int64_t co = 0; co < cout_g; ++co, w_row += rows_a, g_row += tile_p) {
        register_tile_fma<RX, PX>(s, w_row, g_row);
      }
#pragma unroll
      for (int a = 0; a < RX; ++a) {
        if (r0 + a >= rk) break;
#pragma unroll
        for (int b = 0; b < PX; ++b) gcol[(r0 + a) * tile_p + q0 + b] = s[a * PX + b];
      }
    }
    __syncthreads();
    const int64_t plane0 = n * l.input.image + c0 * l.input.channel;  // grad_input: the same layout
    constexpr int V = kGradLoadVector<scalar_t>;
    const bool vector = vector_gather<V>(l, input + plane0, cc);
#pragma unroll
    for (int j = 0; j < kFusedPairs; ++j) {
      if (!live[j]) continue;
      const int q = t + j * kFusedThreads;
      const int k = q / tile_p, pp = q - k * tile_p;
      const bool scatter = corners[j].inside && modulation[j] != acc_t(0);
      for (int ci = 0; ci < cc;) {
        acc_t v[V], dy[V], dx[V];
        const int got = gather_step<true>(corners[j], input + plane0, l.input.channel, ci, vector, v, dy, dx);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          if (e >= got) break;
          const acc_t gc = gcol[((ci + e) * K + k) * tile_p + pp];
          gm[j] += gc * v[e];
          gy[j] += gc * dy[e];
          gx[j] += gc * dx[e];
          if (scatter) {
            const acc_t gcm = gc * modulation[j];
            grad_t* gin = grad_input + plane0 + (ci + e) * l.input.channel;
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              if (corners[j].idx[c] >= 0) add(gin + corners[j].idx[c], gcm * corners[j].w[c]);
            }
          }
        }
        ci += got;
      }
    }
    c0 += cc;
  }
  if (current_og >= 0) flush(current_og);
}

// B: block (item chunk bx, channel chunk by): grad_weight[co][(c - group start) * K + k] for the
// chunk's chunk_b channels, summed over the items bx, bx + item_chunks, ... into partials[bx].
template <typename scalar_t>
__global__ void __launch_bounds__(kFusedThreads)
    fused_weight_grad_partial_kernel(Geometry g, FusedLayouts l, FusedBackwardPlan plan,
                                     const scalar_t* __restrict__ input,
                                     const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                                     const scalar_t* __restrict__ grad_out,
                                     at::opmath_type<scalar_t>* __restrict__ partials, int64_t cout,
                                     int64_t groups) {
  using acc_t = at::opmath_type<scalar_t>;
  HYBRIDOPS_DYNAMIC_SHARED(unsigned char, smem_raw);
  const int tile_p = plan.tile_p, K = static_cast<int>(g.taps()), cc = plan.chunk_b, rk = cc * K;
  const int64_t cin_g = g.channels / groups, cout_g = cout / groups;
  const int ld = tile_p + 1;                             // padded rows: lanes along r hit distinct banks
  acc_t* samples = reinterpret_cast<acc_t*>(smem_raw);  // [chunk_b * K][ld]
  acc_t* gout = samples + rk * ld;                       // [cout_g][tile_p]
  const int t = threadIdx.x;
  const int64_t P = g.out_pixels();
  const int64_t tiles_p = (P + tile_p - 1) / tile_p, items = g.batch * tiles_p;
  const int64_t c0 = int64_t(blockIdx.y) * cc;
  const int64_t gi = c0 / cin_g, og = c0 / g.channels_per_offset_group();
  const int pairs = K * tile_p, entries = static_cast<int>(cout_g) * rk;
  acc_t acc[kFusedWeightOutputs];
#pragma unroll
  for (int j = 0; j < kFusedWeightOutputs; ++j) acc[j] = 0;
  for (int64_t item = blockIdx.x; item < items; item += plan.item_chunks) {
    const int64_t n = item / tiles_p, p0 = (item - n * tiles_p) * tile_p;
    __syncthreads();  // the previous item's tiles are consumed
    const scalar_t* plane = input_plane(input, l, n, c0);
    const bool vector = vector_gather<kLoadVector<scalar_t>>(l, plane, cc);
    for (int q = t; q < pairs; q += kFusedThreads) {
      const int64_t p = p0 + q % tile_p;
      acc_t m = 0;
      BilinearCorners<acc_t, int64_t> c4{};
      if (p < P) {
        const SampleItem<int64_t> it{n, og, q / tile_p, p};
        c4 = with_index_type<int64_t>(tap_corners_laid_out<scalar_t, acc_t>(g, offset, l.offset, mask, l.mask, it, m),
                                      l.input.pixel);
      }
      const int row = q / tile_p, col = q - row * tile_p;  // row = tap k of channel 0
      sample_pair(c4, p < P, m, plane, l.input.channel, cc, vector, samples + row * ld + col, K * ld);
    }
    load_grad_out_tile(l, grad_out, n, gi * cout_g, cout_g, p0, tile_p, P, gout);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kFusedWeightOutputs; ++j) {
      const int e = t + j * kFusedThreads;
      if (e >= entries) continue;
      const int co = e / rk, r = e - co * rk;
      acc_t s = 0;
      for (int pp = 0; pp < tile_p; ++pp) s += gout[co * tile_p + pp] * samples[r * ld + pp];
      acc[j] += s;
    }
  }
#pragma unroll
  for (int j = 0; j < kFusedWeightOutputs; ++j) {
    const int e = t + j * kFusedThreads;
    if (e >= entries) continue;
    const int co = e / rk, r = e - co * rk;
    partials[(int64_t(blockIdx.x) * cout + gi * cout_g + co) * cin_g * K + (c0 - gi * cin_g) * K + r] = acc[j];
  }
}

// grad_weight[i] = sum over the item chunks of partials[chunk][i], in chunk order.
template <typename scalar_t>
__global__ void fused_weight_grad_reduce_kernel(const at::opmath_type<scalar_t>* __restrict__ partials,
                                                scalar_t* __restrict__ grad_weight, int64_t numel, int64_t chunks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= numel) return;
  acc_t s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partials[c * numel + i];
  grad_weight[i] = static_cast<scalar_t>(s);
}

// The fused backward's launcher, from the checked arguments backward<CudaBackend> also takes (same
// results), or nullopt when use_fused picks the im2col path for this shape.
inline c10::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>> fused_backward_cuda(
    const BackwardArgs& a) {
  const Geometry& g = a.g;
  const at::Tensor &grad_out = a.grad_out, &input = a.input, &offset = a.offset, &weight = a.weight;
  const c10::optional<at::Tensor>& mask = a.mask;
  const int64_t N = input.size(0), cout = weight.size(0), groups = a.groups;
  const auto acc_dtype = at::toOpMathType(input.scalar_type());
  const FusedBackwardPlan plan = plan_fused_backward(g, g.channels / groups, cout / groups, at::elementSize(acc_dtype));
  if (!use_fused(plan.tile_p, plan.why_not, g.channels / groups, cout / groups, kFusedAutoBackwardMaxChannels)) {
    return c10::nullopt;
  }
  // Each tensor keeps its layout (BackwardArgs: contiguous or channels-last); the kernels scatter
  // grad_input in the layout they read the input in (the op returns it in a.grad_input_format) and
  // write grad_offset and grad_mask in the offset's and the mask's.
  at::Tensor grad_input_acc = empty_in_format(input.sizes(), input.options().dtype(acc_dtype), result_format(input));
  grad_input_acc.zero_();
  at::Tensor grad_offset = empty_in_format(offset.sizes(), offset.options(), a.grad_offset_format);
  at::Tensor grad_mask = g.use_mask ? empty_in_format(mask->sizes(), mask->options(), a.grad_mask_format)
                                    : at::empty({0}, offset.options());
  at::Tensor grad_weight = at::zeros(weight.sizes(), weight.options());
  auto result = [&] {
    at::Tensor grad_input = acc_dtype == input.scalar_type() ? grad_input_acc : grad_input_acc.to(input.scalar_type());
    return std::make_tuple(grad_input.contiguous(a.grad_input_format), grad_offset, grad_weight, grad_mask);
  };
  if (N == 0) return result();
  const FusedLayouts l{layout_of(input), layout_of(offset), g.use_mask ? layout_of(*mask) : PixelLayout{},
                       layout_of(grad_out)};
  const int64_t tiles_p = (g.out_pixels() + plan.tile_p - 1) / plan.tile_p;
  TORCH_CHECK(N * tiles_p < (int64_t(1) << 31) && g.channels / plan.chunk_b <= 65535,
              "hybridops.deform_conv2d: too large for one fused launch (set HYBRIDOPS_DCN_ALGO=im2col)");
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_fused_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* msk = g.use_mask ? mask->data_ptr<scalar_t>() : nullptr;
    scalar_t* gmsk = g.use_mask ? grad_mask.data_ptr<scalar_t>() : nullptr;
    auto sampling = [&](auto* gin, auto add) {
      using grad_t = std::remove_pointer_t<decltype(gin)>;
      HYBRIDOPS_LAUNCH(static_cast<unsigned>(N * tiles_p), kFusedThreads, plan.smem_a, stream,
                       fused_backward_sampling_kernel<scalar_t, grad_t, decltype(add)>)(
          g, l, plan, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), msk, weight.data_ptr<scalar_t>(),
          grad_out.data_ptr<scalar_t>(), grad_offset.data_ptr<scalar_t>(), gmsk, gin, add, cout, groups);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (deterministic) {
      // FixedPointAdd's scale needs a bound on |grad_columns|: sum_co |W| * max |grad_out| bounds it.
      const at::Tensor bound = (weight.abs().to(at::kDouble).sum(0).amax() * grad_out.abs().amax().to(at::kDouble))
                                   .reshape({1});
      col2im_fixed_point(g, mask, bound, grad_input_acc, [&](const FixedPointAdd& add) { sampling(add.base, add); });
    } else {
      sampling(grad_input_acc.data_ptr<acc_t>(), AtomicAdd());
    }
    at::Tensor partials = at::empty({plan.item_chunks, weight.numel()}, input.options().dtype(acc_dtype));
    const dim3 grid(static_cast<unsigned>(plan.item_chunks), static_cast<unsigned>(g.channels / plan.chunk_b));
    HYBRIDOPS_LAUNCH(grid, kFusedThreads, plan.smem_b, stream, fused_weight_grad_partial_kernel<scalar_t>)(
        g, l, plan, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), msk, grad_out.data_ptr<scalar_t>(),
        partials.data_ptr<acc_t>(), cout, groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    HYBRIDOPS_LAUNCH(static_cast<unsigned>((weight.numel() + 255) / 256), 256, 0, stream,
                     fused_weight_grad_reduce_kernel<scalar_t>)(partials.data_ptr<acc_t>(),
                                                               grad_weight.data_ptr<scalar_t>(), weight.numel(),
                                                               plan.item_chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result();
}
