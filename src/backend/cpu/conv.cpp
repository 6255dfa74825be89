#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

// cols[(c*kh + i)*kw + j, oy*out_w + ox] = x[c, oy*stride_h - pad_h + i, ox*stride_w - pad_w + j] (0 outside)
void im2col(const float* x, float* cols, const Conv2dGeometry& g) {
  const i64 patches = g.out_h * g.out_w;
#pragma omp parallel for if (g.channels * g.kernel_h * g.kernel_w * patches > 65536)
  for (i64 row = 0; row < g.channels * g.kernel_h * g.kernel_w; ++row) {
    const i64 c = row / (g.kernel_h * g.kernel_w);
    const i64 i = (row / g.kernel_w) % g.kernel_h;
    const i64 j = row % g.kernel_w;
    float* out = cols + row * patches;
    for (i64 oy = 0; oy < g.out_h; ++oy) {
      const i64 y = oy * g.stride_h - g.pad_h + i;
      for (i64 ox = 0; ox < g.out_w; ++ox) {
        const i64 xx = ox * g.stride_w - g.pad_w + j;
        const bool inside = y >= 0 && y < g.height && xx >= 0 && xx < g.width;
        out[oy * g.out_w + ox] = inside ? x[(c * g.height + y) * g.width + xx] : 0.0f;
      }
    }
  }
}

void col2im(const float* dcols, float* dx, const Conv2dGeometry& g) {
  const i64 patches = g.out_h * g.out_w;
  // Parallel over channels: each channel's rows only write that channel's plane.
#pragma omp parallel for if (g.channels * g.kernel_h * g.kernel_w * patches > 65536)
  for (i64 c = 0; c < g.channels; ++c) {
    for (i64 i = 0; i < g.kernel_h; ++i) {
      for (i64 j = 0; j < g.kernel_w; ++j) {
        const float* in = dcols + ((c * g.kernel_h + i) * g.kernel_w + j) * patches;
        for (i64 oy = 0; oy < g.out_h; ++oy) {
          const i64 y = oy * g.stride_h - g.pad_h + i;
          if (y < 0 || y >= g.height) continue;
          for (i64 ox = 0; ox < g.out_w; ++ox) {
            const i64 xx = ox * g.stride_w - g.pad_w + j;
            if (xx >= 0 && xx < g.width) dx[(c * g.height + y) * g.width + xx] += in[oy * g.out_w + ox];
          }
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
