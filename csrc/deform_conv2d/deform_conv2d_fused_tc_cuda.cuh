// The tensor-core variant of the fused CUDA forward of deform_conv2d (issue #16), for fp16/bf16 on
// sm_80 and newer, and fused_forward_cuda, which picks it or the FMA kernel
// (deform_conv2d_fused_cuda.cuh). Included by deform_conv2d_cuda.cu inside its anonymous namespace,
// after the FMA kernel (it shares load_pair_corners); common/cuda_wmma.h is included at file scope.
//
// Block and sampling as in the FMA kernel (same grid, pixel tile and channel tile). Per channel
// chunk, each thread samples its (tap, pixel) pairs in float (the same per-element math), rounds to
// the storage type into shared memory [rows_pad][tile_p] -- the value the im2col path writes to its
// columns buffer -- and the weight slice goes beside it as [tile_co_pad][rows_pad] (padding zero;
// every row 16 bytes longer, against bank conflicts).
// Warp w owns output fragment (w / (tile_p/16), w % (tile_p/16)) of 16 channels x 16 pixels and
// runs rows/16 wmma 16x16x16 steps per chunk, accumulating in float. At the end the fragments go
// to a float staging tile; the threads add the bias and store. The plan: plan_fused_forward_tc.
// On the GPU the body exists in the sm_80+ device passes only (HYBRIDOPS_WMMA); the launcher runs
// it only where tensor_cores_available().
#pragma once

#ifndef HYBRIDOPS_WMMA
#error "include common/cuda_wmma.h before deform_conv2d_fused_tc_cuda.cuh"
#endif

template <typename scalar_t>
__global__ void __launch_bounds__(kFusedThreads)
    fused_forward_tc_kernel(Geometry g, FusedLayouts l, FusedPlan plan, int rows_pad, int tile_co_pad,
                            const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                            const scalar_t* __restrict__ mask, const scalar_t* __restrict__ weight,
                            const scalar_t* __restrict__ bias, scalar_t* __restrict__ out, int64_t cout,
                            int64_t groups) {
#if HYBRIDOPS_WMMA
  namespace wmma = nvcuda::wmma;
  using acc_t = float;
  using mma_t = typename WmmaElement<scalar_t>::type;
  HYBRIDOPS_DYNAMIC_SHARED_ALIGNED(unsigned char, smem_raw_128, 128);  // wmma tiles need 32 bytes
  unsigned char* smem_raw = smem_raw_128;
  const int tile_p = plan.tile_p, tile_co = plan.tile_co;
  const int K = static_cast<int>(g.taps());
  // Row strides: every row kFusedMmaRowPad 16-bit elements (16 bytes) longer than its data, so
  // the fragments' 16-byte row pieces fall in different bank groups (deform_conv2d_fused_plan.h).
  const int ld_s = tile_p + kFusedMmaRowPad, ld_w = rows_pad + kFusedMmaRowPad;
  const int ld_acc = tile_p + kFusedMmaRowPad / 2;
  scalar_t* samples = reinterpret_cast<scalar_t*>(smem_raw);  // [rows_pad][ld_s]
  scalar_t* wtile = samples + rows_pad * ld_s;                 // [tile_co_pad][ld_w]
  acc_t* staging = reinterpret_cast<acc_t*>(wtile + tile_co_pad * ld_w);  // [tile_co_pad][ld_acc]
  const int t = threadIdx.x, warp = t / 32;
  const ForwardBlock blk = forward_block(g, tile_p, tile_co, cout, groups);
  const int64_t P = blk.P, n = blk.n, p0 = blk.p0, cin_g = blk.cin_g, cout_g = blk.cout_g;
  const int64_t gi = blk.gi, co0 = blk.co0, c_begin = blk.c_begin, c_end = blk.c_end, cpg = blk.cpg;
  const int pairs = K * tile_p;
  // This warp's output fragment; warps past the last fragment only sample (a warp-uniform test,
  // so the wmma calls stay convergent).
  const int frags_p = tile_p / kFusedMmaTile;
  const bool has_fragment = warp < (tile_co_pad / kFusedMmaTile) * frags_p;
  const int frag_co = warp / frags_p * kFusedMmaTile, frag_p = warp % frags_p * kFusedMmaTile;

  BilinearCorners<acc_t, int32_t> corners[kFusedPairs];
  acc_t modulation[kFusedPairs];
  bool live[kFusedPairs];
  wmma::fragment<wmma::accumulator, kFusedMmaTile, kFusedMmaTile, kFusedMmaTile, acc_t> acc;
  if (has_fragment) wmma::fill_fragment(acc, 0.0f);

  int64_t current_og = -1;
  for (int64_t c0 = c_begin; c0 < c_end;) {
    const int64_t og = c0 / cpg;
    const int cc = forward_chunk(blk, c0, plan.chunk_c);
    const int rk = cc * K, rk_pad = round_up_to_mma_tile(rk);  // rows; wmma steps x 16
    if (og != current_og) {
      load_pair_corners(g, l, offset, mask, n, og, p0, tile_p, corners, modulation, live);
      current_og = og;
    }
    __syncthreads();  // the previous chunk's tiles are consumed
    const scalar_t* plane = input_plane(input, l, n, c0);
    const bool vector = vector_gather<kLoadVector<scalar_t>>(l, plane, cc);
#pragma unroll
    for (int j = 0; j < kFusedPairs; ++j) {
      const int q = t + j * kFusedThreads;  // (tap q / tile_p, pixel q % tile_p): row ci * K + tap
      if (q >= pairs) continue;
      sample_pair(corners[j], live[j], modulation[j], plane, l.input.channel, cc, vector,
                  samples + (q / tile_p) * ld_s + q % tile_p, K * ld_s);
    }
    for (int i = t; i < (rk_pad - rk) * tile_p; i += kFusedThreads) {
      samples[(rk + i / tile_p) * ld_s + i % tile_p] = scalar_t(0);
    }
    for (int i = t; i < tile_co_pad * rk_pad; i += kFusedThreads) {
      const int co = i / rk_pad, r = i - co * rk_pad;
      const int64_t oc = gi * cout_g + co0 + co;
      wtile[co * ld_w + r] =
          co < tile_co && co0 + co < cout_g && r < rk ? weight[oc * cin_g * K + (c0 - c_begin) * K + r] : scalar_t(0);
    }
    __syncthreads();
    if (has_fragment) {
      for (int k0 = 0; k0 < rk_pad; k0 += kFusedMmaTile) {
        wmma::fragment<wmma::matrix_a, kFusedMmaTile, kFusedMmaTile, kFusedMmaTile, mma_t, wmma::row_major> a_frag;
        wmma::fragment<wmma::matrix_b, kFusedMmaTile, kFusedMmaTile, kFusedMmaTile, mma_t, wmma::row_major> b_frag;
        wmma::load_matrix_sync(a_frag, reinterpret_cast<const mma_t*>(wtile + frag_co * ld_w + k0), ld_w);
        wmma::load_matrix_sync(b_frag, reinterpret_cast<const mma_t*>(samples + k0 * ld_s + frag_p), ld_s);
        wmma::mma_sync(acc, a_frag, b_frag, acc);
      }
    }
    c0 += cc;
  }
  if (has_fragment) {
    wmma::store_matrix_sync(staging + frag_co * ld_acc + frag_p, acc, ld_acc, wmma::mem_row_major);
  }
  __syncthreads();
  for (int o = t; o < tile_co * tile_p; o += kFusedThreads) {
    const int co_l = o / tile_p, p_l = o % tile_p;
    const int64_t co = co0 + co_l, p = p0 + p_l;
    if (co >= cout_g || p >= P) continue;
    const int64_t oc = gi * cout_g + co;
    out[l.output.at(n, oc, p)] =
        static_cast<scalar_t>(staging[co_l * ld_acc + p_l] + (bias ? static_cast<acc_t>(bias[oc]) : acc_t(0)));
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // code for a GPU without tensor cores: the launcher never runs it (tc_kernel_has_body)
#endif
}

// Whether the code the driver loaded for the tensor-core kernel has its body: built from compute_80
// or newer PTX. A build whose only image usable on this GPU is older PTX (TORCH_CUDA_ARCH_LIST
// "7.5+PTX" on an sm_80 GPU, say) JIT-compiles the trap above; then the FMA kernel runs. Cached per
// device and dtype.
template <typename scalar_t>
bool tc_kernel_has_body() {
#ifdef HYBRIDOPS_CUDA_EMULATION
  return true;
#else
  constexpr int kMaxDevices = 64;
  static std::atomic<int8_t> known[kMaxDevices] = {};  // 0 unknown, 1 yes, -1 no
  const int device = c10::cuda::current_device();
  if (device >= 0 && device < kMaxDevices && known[device].load() != 0) return known[device].load() > 0;
  cudaFuncAttributes attr;
  const bool ok = cudaFuncGetAttributes(&attr, fused_forward_tc_kernel<scalar_t>) == cudaSuccess && attr.ptxVersion >= 80;
  (void)cudaGetLastError();  // a failed query is not the next launch's error
  if (device >= 0 && device < kMaxDevices) known[device].store(ok ? 1 : -1);
  return ok;
#endif
}

// launch_fused_forward_fma's tensor-core twin (the same grid: the plans share their tiles).
inline void launch_fused_forward_tc(const ForwardArgs& a, const FusedLayouts& l, const FusedTcPlan& tc, dim3 grid,
                                    const at::Tensor& bias, at::Tensor& out) {
  const Geometry& g = a.g;
  const FusedPlan& plan = tc.base;
  const int64_t cout = a.weight.size(0), groups = a.groups;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_REDUCED_FLOATING_TYPES(a.input.scalar_type(), "deform_conv2d_fused_tc_cuda", [&] {
    HYBRIDOPS_LAUNCH(grid, kFusedThreads, plan.smem_bytes, stream, fused_forward_tc_kernel<scalar_t>)(
        g, l, plan, tc.rows_pad, tc.tile_co_pad, a.input.data_ptr<scalar_t>(), a.offset.data_ptr<scalar_t>(),
        g.use_mask ? a.mask->data_ptr<scalar_t>() : nullptr, a.weight.data_ptr<scalar_t>(),
        bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), cout, groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The fused forward, from the checked arguments forward<CudaBackend> also takes: the tensor-core
// kernel for fp16/bf16 on sm_80+ where its plan covers the shape (and HYBRIDOPS_DCN_TENSOR_CORES is
// not 0), else the FMA kernel; an undefined tensor when use_fused picks the im2col path (under auto
// up to kFusedAutoTensorCoreForwardMaxChannels channels per group on tensor cores,
// kFusedAutoForwardMaxChannels on FMA).
inline at::Tensor fused_forward_cuda(const ForwardArgs& a) {
  const Geometry& g = a.g;
  const int64_t N = a.input.size(0), cout = a.weight.size(0), groups = a.groups;
  const FusedPlan plan = plan_fused_forward(g, cout / groups, at::elementSize(at::toOpMathType(a.input.scalar_type())));
  const bool tc_requested = tensor_cores_requested();  // parsed on every call: a bad value always raises
  const at::ScalarType dtype = a.input.scalar_type();
  FusedTcPlan tc;
  if (tc_requested && tensor_cores_available() &&
      ((dtype == at::kHalf && tc_kernel_has_body<at::Half>()) ||
       (dtype == at::kBFloat16 && tc_kernel_has_body<at::BFloat16>()))) {
    tc = plan_fused_forward_tc(g, cout / groups);
  }
  const bool on_tensor_cores = tc.base.tile_p > 0;
  if (!use_fused(plan.tile_p, plan.why_not, g.channels / groups, cout / groups,
                 on_tensor_cores ? kFusedAutoTensorCoreForwardMaxChannels : kFusedAutoForwardMaxChannels)) {
    return at::Tensor();
  }
  const int64_t tiles_p = ceil_div(g.out_pixels(), plan.tile_p), co_tiles = ceil_div(cout / groups, plan.tile_co);
  at::Tensor out = forward_output(a, a.out_format);  // the input's layout
  if (N == 0) return out;
  // The tensor-core plan has the same tiles (hence the same grid) as the FMA plan.
  TORCH_CHECK(N * tiles_p < (int64_t(1) << 31) && groups * co_tiles <= 65535,
              "hybridops.deform_conv2d: too large for one fused launch (set HYBRIDOPS_DCN_ALGO=im2col)");
  const dim3 grid(static_cast<unsigned>(N * tiles_p), static_cast<unsigned>(groups * co_tiles));
  const at::Tensor bias = a.bias.has_value() ? a.bias->contiguous() : at::Tensor();  // read by index
  const FusedLayouts l{layout_of(a.input), layout_of(a.offset), g.use_mask ? layout_of(*a.mask) : PixelLayout{},
                       layout_of(out)};
  if (on_tensor_cores) {
    launch_fused_forward_tc(a, l, tc, grid, bias, out);
  } else {
    launch_fused_forward_fma(a, l, plan, grid, bias, out);
  }
  return out;
}
