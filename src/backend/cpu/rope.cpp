#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void rope(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq, i64 pos_offset,
          RopeLayout layout, bool inverse) {
  const i64 half = head_dim / 2;
  // The angles depend on position and pair only: one table per call serves every head.
  std::vector<float> cos_table(static_cast<std::size_t>(seq * half)), sin_table(cos_table.size());
#pragma omp parallel for if (seq * half >= 4096)  // each angle: a libm sin and cos
  for (i64 t = 0; t < seq; ++t) {
    const auto pos = static_cast<float>(pos_offset + t);
    for (i64 i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_table[static_cast<std::size_t>(t * half + i)] = std::cos(angle);
      sin_table[static_cast<std::size_t>(t * half + i)] = inverse ? -std::sin(angle) : std::sin(angle);
    }
  }
#pragma omp parallel for collapse(2) if (outer * seq * head_dim > 16384)
  for (i64 o = 0; o < outer; ++o) {
    for (i64 t = 0; t < seq; ++t) {
      const float* xr = x + (o * seq + t) * head_dim;
      float* yr = y + (o * seq + t) * head_dim;
      const float* c = cos_table.data() + t * half;
      const float* s = sin_table.data() + t * half;
      if (layout == RopeLayout::half) {
        for (i64 i = 0; i < half; ++i) {
          const float x0 = xr[i], x1 = xr[i + half];
          yr[i] = x0 * c[i] - x1 * s[i];
          yr[i + half] = x0 * s[i] + x1 * c[i];
        }
      } else {
        for (i64 i = 0; i < half; ++i) {
          const float x0 = xr[2 * i], x1 = xr[2 * i + 1];
          yr[2 * i] = x0 * c[i] - x1 * s[i];
          yr[2 * i + 1] = x0 * s[i] + x1 * c[i];
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
