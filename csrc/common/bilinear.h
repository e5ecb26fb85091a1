// Bilinear sampling with zero padding, and its derivative with respect to the sampling point.
//
// Semantics are torchvision's deform_conv2d, including its degenerate points:
// * Value: a point (y, x) samples a plane of size H x W as the bilinear blend of its four integer
//   neighbours (the floor cell), neighbours outside the plane reading as 0; a point with y <= -1,
//   y >= H, x <= -1 or x >= W samples exactly 0.
// * Derivative: the derivative of that blend of the floor cell, with no early-out of its own, i.e.
//   the one-sided derivative from the right. It is 0 wherever the whole floor cell lies outside
//   the plane, but NOT on the lines y == -1 and x == -1: there the value is 0 while d/dy (resp.
//   d/dx) is the pull of row 0 (column 0). Those are exactly the top-row / left-column taps of a
//   zero-offset padded convolution, i.e. every DeformConv2dV2 at initialisation.
// * NaN: a NaN coordinate samples NaN and has NaN derivatives (torchvision's forward gives NaN
//   there too); it has no neighbours, so it scatters nothing into grad_input. An infinite
//   coordinate is a point far outside the plane: value 0, derivative 0.
#pragma once

#include <limits>

#include "common/host_device.h"

namespace hybridops {

// The four neighbours of a sampling point: plane offsets (row * W + col, or -1 when outside the
// plane), their blend weights, and the derivatives of those weights with respect to y and x.
// Corner order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
template <typename acc_t, typename index_t>
struct BilinearCorners {
  index_t idx[4];
  acc_t w[4];
  acc_t dwdy[4];
  acc_t dwdx[4];
  // True when the point is in the open domain (-1, H) x (-1, W) where the blend is the value.
  // Outside it the value is `outside` (0, or NaN for a NaN point) whatever the weights say, and
  // grad_input receives nothing (scatter only when `inside`).
  bool inside;
  acc_t outside;

  // sum_i w_i * plane[idx_i]
  template <typename scalar_t>
  HOST_DEVICE_INLINE acc_t sample(const scalar_t* plane) const {
    acc_t v = 0;
HYBRIDOPS_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (idx[i] >= 0) v += w[i] * static_cast<acc_t>(plane[idx[i]]);
    }
    return inside ? v : outside;
  }

  // Value and its derivatives d/dy, d/dx in one read of the four neighbours.
  template <typename scalar_t>
  HOST_DEVICE_INLINE void sample_with_grad(const scalar_t* plane, acc_t& v, acc_t& dy, acc_t& dx) const {
    v = 0;
    dy = outside;  // 0, or NaN for a NaN point
    dx = outside;
HYBRIDOPS_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (idx[i] >= 0) {
        const acc_t p = static_cast<acc_t>(plane[idx[i]]);
        v += w[i] * p;
        dy += dwdy[i] * p;
        dx += dwdx[i] * p;
      }
    }
    v = inside ? v : outside;
  }
};

// The same corners with plane offsets of another integer type, each (not the -1 of a corner outside)
// multiplied by `pixel_stride`: the distance between neighbouring pixels of the plane (1 for NCHW,
// C for a channels-last image). The caller guarantees they fit: the fused CUDA kernels keep 32-bit
// offsets in registers for images whose plane (or NHWC image) has under 2^31 elements.
template <typename to_index_t, typename acc_t, typename index_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, to_index_t> with_index_type(const BilinearCorners<acc_t, index_t>& c,
                                                                      index_t pixel_stride = 1) {
  BilinearCorners<acc_t, to_index_t> r;
HYBRIDOPS_UNROLL
  for (int i = 0; i < 4; ++i) {
    r.idx[i] = static_cast<to_index_t>(c.idx[i] >= 0 ? c.idx[i] * pixel_stride : index_t(-1));
    r.w[i] = c.w[i];
    r.dwdy[i] = c.dwdy[i];
    r.dwdx[i] = c.dwdx[i];
  }
  r.inside = c.inside;
  r.outside = c.outside;
  return r;
}

template <typename acc_t, typename index_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, index_t> bilinear_corners(acc_t y, acc_t x, index_t height,
                                                                    index_t width) {
  BilinearCorners<acc_t, index_t> c;
  c.inside = y > acc_t(-1) && y < acc_t(height) && x > acc_t(-1) && x < acc_t(width);
  c.outside = (y != y || x != x) ? std::numeric_limits<acc_t>::quiet_NaN() : acc_t(0);
  // The derivative's domain adds the lines y == -1 and x == -1 (see the header comment); it is
  // false for NaN and infinite coordinates, so floor() below only sees finite values.
  if (!(y >= acc_t(-1) && y < acc_t(height) && x >= acc_t(-1) && x < acc_t(width))) {
HYBRIDOPS_UNROLL
    for (int i = 0; i < 4; ++i) {
      c.idx[i] = -1;
      c.w[i] = c.dwdy[i] = c.dwdx[i] = 0;
    }
    return c;
  }
  const acc_t yf = floor_hd(y);
  const acc_t xf = floor_hd(x);
  const index_t y0 = static_cast<index_t>(yf);
  const index_t x0 = static_cast<index_t>(xf);
  const index_t y1 = y0 + 1;
  const index_t x1 = x0 + 1;
  const acc_t ly = y - yf, lx = x - xf;
  const acc_t hy = acc_t(1) - ly, hx = acc_t(1) - lx;

  const bool vy0 = y0 >= 0, vy1 = y1 <= height - 1;
  const bool vx0 = x0 >= 0, vx1 = x1 <= width - 1;
  const bool valid[4] = {vy0 && vx0, vy0 && vx1, vy1 && vx0, vy1 && vx1};
  const index_t rows[4] = {y0, y0, y1, y1};
  const index_t cols[4] = {x0, x1, x0, x1};
  const acc_t w[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const acc_t dwdy[4] = {-hx, -lx, hx, lx};
  const acc_t dwdx[4] = {-hy, hy, -ly, ly};
HYBRIDOPS_UNROLL
  for (int i = 0; i < 4; ++i) {
    c.idx[i] = valid[i] ? rows[i] * width + cols[i] : index_t(-1);
    c.w[i] = valid[i] ? w[i] : acc_t(0);
    c.dwdy[i] = valid[i] ? dwdy[i] : acc_t(0);
    c.dwdx[i] = valid[i] ? dwdx[i] : acc_t(0);
  }
  return c;
}

}  // namespace hybridops
