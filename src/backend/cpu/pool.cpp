#include <limits>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void max_pool2d_forward(const float* x, float* y, i64* argmax, const Pool2dGeometry& g) {
#pragma omp parallel for if (g.planes * g.out_h * g.out_w > 16384)
  for (i64 p = 0; p < g.planes; ++p) {
    const float* plane = x + p * g.height * g.width;
    for (i64 oy = 0; oy < g.out_h; ++oy) {
      for (i64 ox = 0; ox < g.out_w; ++ox) {
        float best = -std::numeric_limits<float>::infinity();
        i64 best_index = -1;
        for (i64 i = 0; i < g.kernel_h; ++i) {
          const i64 yy = oy * g.stride_h - g.pad_h + i;
          if (yy < 0 || yy >= g.height) continue;
          for (i64 j = 0; j < g.kernel_w; ++j) {
            const i64 xx = ox * g.stride_w - g.pad_w + j;
            if (xx < 0 || xx >= g.width) continue;
            const float v = plane[yy * g.width + xx];
            if (best_index < 0 || v > best) {
              best = v;
              best_index = yy * g.width + xx;
            }
          }
        }
        const i64 o = (p * g.out_h + oy) * g.out_w + ox;
        y[o] = best;
        argmax[o] = best_index;
      }
    }
  }
}

void max_pool2d_backward(const float* dy, const i64* argmax, float* dx, const Pool2dGeometry& g) {
#pragma omp parallel for if (g.planes * g.out_h * g.out_w > 16384)
  for (i64 p = 0; p < g.planes; ++p) {
    for (i64 o = 0; o < g.out_h * g.out_w; ++o) {
      const i64 index = argmax[p * g.out_h * g.out_w + o];
      if (index >= 0) dx[p * g.height * g.width + index] += dy[p * g.out_h * g.out_w + o];
    }
  }
}

void avg_pool2d_forward(const float* x, float* y, const Pool2dGeometry& g) {
  const float inv = 1.0f / static_cast<float>(g.kernel_h * g.kernel_w);
#pragma omp parallel for if (g.planes * g.out_h * g.out_w > 16384)
  for (i64 p = 0; p < g.planes; ++p) {
    const float* plane = x + p * g.height * g.width;
    for (i64 oy = 0; oy < g.out_h; ++oy) {
      for (i64 ox = 0; ox < g.out_w; ++ox) {
        float sum = 0;
        for (i64 i = 0; i < g.kernel_h; ++i) {
          const i64 yy = oy * g.stride_h - g.pad_h + i;
          if (yy < 0 || yy >= g.height) continue;
          for (i64 j = 0; j < g.kernel_w; ++j) {
            const i64 xx = ox * g.stride_w - g.pad_w + j;
            if (xx >= 0 && xx < g.width) sum += plane[yy * g.width + xx];
          }
        }
        y[(p * g.out_h + oy) * g.out_w + ox] = sum * inv;
      }
    }
  }
}

void avg_pool2d_backward(const float* dy, float* dx, const Pool2dGeometry& g) {
  const float inv = 1.0f / static_cast<float>(g.kernel_h * g.kernel_w);
#pragma omp parallel for if (g.planes * g.out_h * g.out_w > 16384)
  for (i64 p = 0; p < g.planes; ++p) {
    float* plane = dx + p * g.height * g.width;
    for (i64 oy = 0; oy < g.out_h; ++oy) {
      for (i64 ox = 0; ox < g.out_w; ++ox) {
        const float grad = dy[(p * g.out_h + oy) * g.out_w + ox] * inv;
        for (i64 i = 0; i < g.kernel_h; ++i) {
          const i64 yy = oy * g.stride_h - g.pad_h + i;
          if (yy < 0 || yy >= g.height) continue;
          for (i64 j = 0; j < g.kernel_w; ++j) {
            const i64 xx = ox * g.stride_w - g.pad_w + j;
            if (xx >= 0 && xx < g.width) plane[yy * g.width + xx] += grad;
          }
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
