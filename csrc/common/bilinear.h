// Bilinear sampling with zero padding, and its derivative with respect to the sampling point.
//
// Semantics are torchvision's deform_conv2d: a point (y, x) samples a plane of size H x W as the
// bilinear blend of its four integer neighbours, where neighbours outside the plane read as 0, and a
// point with y <= -1, y >= H, x <= -1 or x >= W samples 0 (and has zero derivative).
#pragma once

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

  // sum_i w_i * plane[idx_i]
  template <typename scalar_t>
  HOST_DEVICE_INLINE acc_t sample(const scalar_t* plane) const {
    acc_t v = 0;
HYBRIDOPS_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (idx[i] >= 0) v += w[i] * static_cast<acc_t>(plane[idx[i]]);
    }
    return v;
  }

  // Value and its derivatives d/dy, d/dx in one read of the four neighbours.
  template <typename scalar_t>
  HOST_DEVICE_INLINE void sample_with_grad(const scalar_t* plane, acc_t& v, acc_t& dy, acc_t& dx) const {
    v = 0;
    dy = 0;
    dx = 0;
HYBRIDOPS_UNROLL
    for (int i = 0; i < 4; ++i) {
      if (idx[i] >= 0) {
        const acc_t p = static_cast<acc_t>(plane[idx[i]]);
        v += w[i] * p;
        dy += dwdy[i] * p;
        dx += dwdx[i] * p;
      }
    }
  }
};

template <typename acc_t, typename index_t>
HOST_DEVICE_INLINE BilinearCorners<acc_t, index_t> bilinear_corners(acc_t y, acc_t x, index_t height,
                                                                    index_t width) {
  BilinearCorners<acc_t, index_t> c;
  if (!(y > acc_t(-1) && y < acc_t(height) && x > acc_t(-1) && x < acc_t(width))) {
    // Also catches NaN coordinates: they sample 0.
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
