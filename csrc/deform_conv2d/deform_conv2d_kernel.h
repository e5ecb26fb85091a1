// Per-element math of modulated deformable convolution (DCNv2), shared by the CPU and CUDA kernels.
//
// Layouts (torchvision's), for one block of `batch` images starting at the pointers given:
//   input   [batch, C, H, W]
//   offset  [batch, OG * KH * KW * 2, Ho, Wo]   (dy, dx) pairs per offset group and tap
//   mask    [batch, OG * KH * KW, Ho, Wo]       (absent: all ones, DCNv1)
//   columns [C * KH * KW, batch * Ho * Wo]      row c * K + k, column b * Ho * Wo + p
// Every function below handles one work item; the launchers (deform_conv2d_cpu.cpp,
// deform_conv2d_cuda.cu) only decide which thread runs which item.
#pragma once

#include "common/bilinear.h"

namespace hybridops {
namespace dcn {

struct Geometry {
  int64_t channels, height, width;
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dil_h, dil_w;
  int64_t offset_groups;
  int64_t batch;  // images in the current block
  bool use_mask;

  HOST_DEVICE_INLINE int64_t taps() const { return kernel_h * kernel_w; }
  HOST_DEVICE_INLINE int64_t out_pixels() const { return out_h * out_w; }
  HOST_DEVICE_INLINE int64_t channels_per_offset_group() const { return channels / offset_groups; }
  // Number of (b, og, k, p) work items of a block.
  HOST_DEVICE_INLINE int64_t sample_items() const { return batch * offset_groups * taps() * out_pixels(); }
};

// A (b, og, k, p) work item decoded from its flat index; p runs fastest so that neighbouring
// threads touch neighbouring output pixels.
template <typename index_t>
struct SampleItem {
  index_t b, og, k, p;
};

template <typename index_t>
HOST_DEVICE_INLINE SampleItem<index_t> decode_sample_item(const Geometry& g, index_t i) {
  SampleItem<index_t> it;
  const index_t P = static_cast<index_t>(g.out_pixels());
  const index_t K = static_cast<index_t>(g.taps());
  const index_t OG = static_cast<index_t>(g.offset_groups);
  it.p = i % P;
  i /= P;
  it.k = i % K;
  i /= K;
  it.og = i % OG;
  it.b = i / OG;
  return it;
}

// Where an item's channel loop walks: the first channel c0 of its offset group in the image planes
// (input or grad_input, [B, C, H, W]) and in the columns ([C * K, B * P]), and the steps from one
// channel to the next (HW in the planes, K * B * P in the columns); cpg channels in all.
template <typename index_t>
struct ChannelWalk {
  index_t plane, col, plane_step, col_step, cpg;
};

template <typename index_t>
HOST_DEVICE_INLINE ChannelWalk<index_t> channel_walk(const Geometry& g, const SampleItem<index_t>& it) {
  const index_t P = static_cast<index_t>(g.out_pixels());
  const index_t K = static_cast<index_t>(g.taps());
  const index_t HW = static_cast<index_t>(g.height * g.width);
  const index_t cpg = static_cast<index_t>(g.channels_per_offset_group());
  const index_t ncols = static_cast<index_t>(g.batch) * P;
  const index_t c0 = it.og * cpg;
  return ChannelWalk<index_t>{(it.b * static_cast<index_t>(g.channels) + c0) * HW, (c0 * K + it.k) * ncols + it.b * P + it.p,
                              HW, K * ncols, cpg};
}

// Where element (n, c, p) of a [N, C, H, W] tensor lives, p = h * W + w the flat pixel:
// n * image + c * channel + p * pixel. Contiguous NCHW is (C * H * W, H * W, 1), channels-last
// (NHWC) (H * W * C, 1, C). The im2col path and the CPU read NCHW; the fused CUDA kernels take
// either for each tensor (deform_conv2d_fused_cuda.cuh).
struct PixelLayout {
  int64_t image, channel, pixel;
  HOST_DEVICE_INLINE int64_t at(int64_t n, int64_t c, int64_t p) const { return n * image + c * channel + p * pixel; }
};

HOST_DEVICE_INLINE PixelLayout nchw_layout(int64_t channels, int64_t pixels) {
  return PixelLayout{channels * pixels, pixels, 1};
}

HOST_DEVICE_INLINE PixelLayout nhwc_layout(int64_t channels, int64_t pixels) {
  return PixelLayout{channels * pixels, 1, channels};
}

// The sampling point of tap k = (kh, kw) at output pixel (ho, wo) displaced by (dy, dx), and its
// four neighbours.
template <typename acc_t, typename index_t, typename scalar_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, index_t> corners_of_tap(const Geometry& g, index_t ho, index_t wo,
                                                                  index_t kh, index_t kw, scalar_t dy, scalar_t dx) {
  const acc_t y = static_cast<acc_t>(ho * g.stride_h - g.pad_h + kh * g.dil_h) + static_cast<acc_t>(dy);
  const acc_t x = static_cast<acc_t>(wo * g.stride_w - g.pad_w + kw * g.dil_w) + static_cast<acc_t>(dx);
  return bilinear_corners<acc_t, index_t>(y, x, static_cast<index_t>(g.height), static_cast<index_t>(g.width));
}

// The sampling point of tap k = (kh, kw) at output pixel p = (ho, wo) (offset added), its four
// neighbours, and the modulation scalar; for callers that walk pixels and taps in order and so know
// (ho, wo, kh, kw) without dividing. Offset and mask NCHW.
template <typename scalar_t, typename acc_t, typename index_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, index_t> tap_corners_at(const Geometry& g, const scalar_t* offset,
                                                                  const scalar_t* mask, const SampleItem<index_t>& it,
                                                                  index_t ho, index_t wo, index_t kh, index_t kw,
                                                                  acc_t& m) {
  const index_t P = static_cast<index_t>(g.out_pixels());
  const index_t K = static_cast<index_t>(g.taps());
  const index_t OG = static_cast<index_t>(g.offset_groups);
  const scalar_t* off_b = offset + it.b * (OG * 2 * K * P);
  const index_t oy = (it.og * 2 * K + 2 * it.k) * P + it.p;
  m = g.use_mask ? static_cast<acc_t>(mask[it.b * (OG * K * P) + (it.og * K + it.k) * P + it.p]) : acc_t(1);
  return corners_of_tap<acc_t, index_t>(g, ho, wo, kh, kw, off_b[oy], off_b[oy + P]);
}

// tap_corners for offset and mask in any PixelLayout (the fused CUDA kernels; 64-bit indices).
template <typename scalar_t, typename acc_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, int64_t> tap_corners_laid_out(const Geometry& g, const scalar_t* offset,
                                                                         const PixelLayout& offset_layout,
                                                                         const scalar_t* mask,
                                                                         const PixelLayout& mask_layout,
                                                                         const SampleItem<int64_t>& it, acc_t& m) {
  const int64_t K = g.taps();
  const int64_t oy = offset_layout.at(it.b, it.og * 2 * K + 2 * it.k, it.p);
  m = g.use_mask ? static_cast<acc_t>(mask[mask_layout.at(it.b, it.og * K + it.k, it.p)]) : acc_t(1);
  return corners_of_tap<acc_t, int64_t>(g, it.p / g.out_w, it.p % g.out_w, it.k / g.kernel_w, it.k % g.kernel_w,
                                        offset[oy], offset[oy + offset_layout.channel]);
}

// tap_corners_at for an item known only by (b, og, k, p).
template <typename scalar_t, typename acc_t, typename index_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, index_t> tap_corners(const Geometry& g, const scalar_t* offset,
                                                               const scalar_t* mask,
                                                               const SampleItem<index_t>& it, acc_t& m) {
  const index_t out_w = static_cast<index_t>(g.out_w), kernel_w = static_cast<index_t>(g.kernel_w);
  return tap_corners_at<scalar_t, acc_t, index_t>(g, offset, mask, it, it.p / out_w, it.p % out_w, it.k / kernel_w,
                                                  it.k % kernel_w, m);
}

// columns[c * K + k, b * P + p] = mask * bilinear(input[b, c], point) for every channel c of the
// item's offset group: the four neighbours and weights are computed once and reused per channel.
template <typename scalar_t, typename acc_t, typename index_t>
HOST_DEVICE_INLINE void im2col_item(const Geometry& g, const scalar_t* input, const scalar_t* offset,
                                    const scalar_t* mask, scalar_t* columns, index_t i) {
  const SampleItem<index_t> it = decode_sample_item<index_t>(g, i);
  acc_t m;
  const BilinearCorners<acc_t, index_t> c4 = tap_corners<scalar_t, acc_t, index_t>(g, offset, mask, it, m);
  const ChannelWalk<index_t> w = channel_walk(g, it);
  const scalar_t* plane = input + w.plane;
  scalar_t* col = columns + w.col;
  for (index_t c = 0; c < w.cpg; ++c) {
    *col = static_cast<scalar_t>(m * c4.sample(plane));
    plane += w.plane_step;
    col += w.col_step;
  }
}

// The same values for channels stored contiguously (an NHWC image, `pixels` = its [H * W, stride]
// rows offset to the first channel): v[c] = mask * bilinear(channel c, point) for c in [0, n),
// with BilinearCorners::sample's arithmetic in its order (so bit-identical to im2col_item), the
// corner loop outside the channel loop so the channel loop is a contiguous vector loop.
template <typename scalar_t, typename acc_t, typename index_t>
HOST_DEVICE_INLINE void sample_point_contiguous(const BilinearCorners<acc_t, index_t>& c4, acc_t m,
                                                const scalar_t* pixels, index_t stride, index_t n, acc_t* v) {
  if (!c4.inside) {
    const acc_t value = m * c4.outside;
    for (index_t c = 0; c < n; ++c) v[c] = value;
    return;
  }
  for (index_t c = 0; c < n; ++c) v[c] = acc_t(0);
HYBRIDOPS_UNROLL
  for (int i = 0; i < 4; ++i) {
    if (c4.idx[i] < 0) continue;
    const scalar_t* p = pixels + c4.idx[i] * stride;
    const acc_t w = c4.w[i];
    for (index_t c = 0; c < n; ++c) v[c] += w * static_cast<acc_t>(p[c]);
  }
  for (index_t c = 0; c < n; ++c) v[c] = m * v[c];
}

// Gradients of the sampling point (offset) and of the modulation (mask) for one (b, og, k, p):
// a reduction over the channels of the offset group, owned by one thread (no atomics):
//   d/d(dy) = sum_c gcol[c, k, p] * mask * d bilinear / dy,   likewise for dx,
//   d/d(m)  = sum_c gcol[c, k, p] * bilinear.
template <typename scalar_t, typename acc_t, typename index_t>
HOST_DEVICE_INLINE void offset_mask_grad_item(const Geometry& g, const scalar_t* input, const scalar_t* offset,
                                              const scalar_t* mask, const scalar_t* grad_columns,
                                              scalar_t* grad_offset, scalar_t* grad_mask, index_t i) {
  const SampleItem<index_t> it = decode_sample_item<index_t>(g, i);
  acc_t m;
  const BilinearCorners<acc_t, index_t> c4 = tap_corners<scalar_t, acc_t, index_t>(g, offset, mask, it, m);
  const ChannelWalk<index_t> w = channel_walk(g, it);
  const scalar_t* plane = input + w.plane;
  const scalar_t* gcol = grad_columns + w.col;
  acc_t gy = 0, gx = 0, gm = 0;
  for (index_t c = 0; c < w.cpg; ++c) {
    acc_t v, dy, dx;
    c4.sample_with_grad(plane, v, dy, dx);
    const acc_t gc = static_cast<acc_t>(*gcol);
    gm += gc * v;
    gy += gc * dy;
    gx += gc * dx;
    plane += w.plane_step;
    gcol += w.col_step;
  }
  const index_t P = static_cast<index_t>(g.out_pixels());
  const index_t K = static_cast<index_t>(g.taps());
  const index_t OG = static_cast<index_t>(g.offset_groups);
  const index_t oy = it.b * (OG * 2 * K * P) + (it.og * 2 * K + 2 * it.k) * P + it.p;
  grad_offset[oy] = static_cast<scalar_t>(gy * m);
  grad_offset[oy + P] = static_cast<scalar_t>(gx * m);
  if (g.use_mask) {
    grad_mask[it.b * (OG * K * P) + (it.og * K + it.k) * P + it.p] = static_cast<scalar_t>(gm);
  }
}

// grad_input for one sample item, scattered with `add(pointer, value)` (an atomic add on the GPU;
// value in acc_t, the functor converts it to the buffer's type):
//   grad_input[b, c, neighbour] += gcol[c, k, p] * mask * weight(neighbour)   for c in the group.
template <typename scalar_t, typename acc_t, typename index_t, typename grad_t, typename AddFn>
HOST_DEVICE_INLINE void col2im_item(const Geometry& g, const scalar_t* offset, const scalar_t* mask,
                                    const scalar_t* grad_columns, grad_t* grad_input, index_t i, AddFn add) {
  const SampleItem<index_t> it = decode_sample_item<index_t>(g, i);
  acc_t m;
  const BilinearCorners<acc_t, index_t> c4 = tap_corners<scalar_t, acc_t, index_t>(g, offset, mask, it, m);
  if (!c4.inside || m == acc_t(0)) return;  // outside (or NaN): the point reads no neighbour
  const ChannelWalk<index_t> w = channel_walk(g, it);
  grad_t* plane = grad_input + w.plane;
  const scalar_t* gcol = grad_columns + w.col;
  for (index_t c = 0; c < w.cpg; ++c) {
    const acc_t gc = static_cast<acc_t>(*gcol) * m;
HYBRIDOPS_UNROLL
    for (int j = 0; j < 4; ++j) {
      if (c4.idx[j] >= 0) add(plane + c4.idx[j], gc * c4.w[j]);
    }
    plane += w.plane_step;
    gcol += w.col_step;
  }
}

// grad_input for the channels [c_begin, c_end) of image b (all in one offset group) from the taps
// [k_begin, k_end), accumulated in a fixed order by one worker that owns those planes:
// deterministic, no atomics. The CPU runs it in parallel over (b, channel block) with all taps (a
// GPU would get too little parallelism from it: its deterministic path is FixedPointAdd below).
template <typename scalar_t, typename acc_t, typename index_t, typename grad_t>
HOST_DEVICE_INLINE void col2im_planes(const Geometry& g, const scalar_t* offset, const scalar_t* mask,
                                      const scalar_t* grad_columns, grad_t* grad_input, index_t b,
                                      index_t c_begin, index_t c_end, index_t k_begin, index_t k_end) {
  const index_t P = static_cast<index_t>(g.out_pixels());
  const index_t K = static_cast<index_t>(g.taps());
  const index_t HW = static_cast<index_t>(g.height * g.width);
  const index_t ncols = static_cast<index_t>(g.batch) * P;
  SampleItem<index_t> it;
  it.b = b;
  it.og = c_begin / static_cast<index_t>(g.channels_per_offset_group());
  grad_t* planes = grad_input + (b * static_cast<index_t>(g.channels) + c_begin) * HW;
  for (it.k = k_begin; it.k < k_end; ++it.k) {
    for (it.p = 0; it.p < P; ++it.p) {
      acc_t m;
      const BilinearCorners<acc_t, index_t> c4 = tap_corners<scalar_t, acc_t, index_t>(g, offset, mask, it, m);
      if (!c4.inside || m == acc_t(0)) continue;
      const scalar_t* gcol = grad_columns + (c_begin * K + it.k) * ncols + b * P + it.p;
      grad_t* plane = planes;
      for (index_t c = c_begin; c < c_end; ++c) {
        const acc_t gc = static_cast<acc_t>(*gcol) * m;
HYBRIDOPS_UNROLL
        for (int j = 0; j < 4; ++j) {
          if (c4.idx[j] >= 0) plane[c4.idx[j]] = static_cast<grad_t>(static_cast<acc_t>(plane[c4.idx[j]]) + gc * c4.w[j]);
        }
        plane += HW;
        gcol += K * ncols;
      }
    }
  }
}

// Order-independent accumulation for the deterministic grad_input: each contribution is rounded
// to a 64-bit two's-complement fixed-point integer (`value * scale`, scale a power of two) and
// added with an integer atomic. Integer addition is associative, so the sums have the same bits
// whatever order the threads run in and on every GPU; the caller picks `scale` from a bound on
// any pixel's sum so nothing wraps (fixed_point_scale in deform_conv2d_driver.h). A non-finite
// contribution cannot be an integer: it marks its pixel in `poison`, which turns it into NaN.
struct FixedPointAdd {
  unsigned long long* base;  // the fixed-point buffer (pointers passed in point into it)
  unsigned char* poison;     // same shape: 1 where a non-finite value landed
  double scale;

  template <typename acc_t>
  HOST_DEVICE_INLINE void operator()(unsigned long long* address, acc_t value) const {
    constexpr double kLimit = 4611686018427387904.0;  // 2^62: a single add never wraps
    const double v = static_cast<double>(value) * scale;
    if (!(v >= -kLimit && v <= kLimit)) {  // NaN, inf, or past the bound
#if defined(__CUDA_ARCH__) || defined(HYBRIDOPS_CUDA_EMULATION)
      poison[address - base] = 1;  // every writer stores the same byte
#else
      __atomic_store_n(poison + (address - base), static_cast<unsigned char>(1), __ATOMIC_RELAXED);
#endif
      return;
    }
    const unsigned long long q = static_cast<unsigned long long>(static_cast<long long>(rint_hd(v)));
#if defined(__CUDA_ARCH__) || defined(HYBRIDOPS_CUDA_EMULATION)
    atomicAdd(address, q);
#else
    __atomic_fetch_add(address, q, __ATOMIC_RELAXED);
#endif
  }

};

}  // namespace dcn
}  // namespace hybridops
