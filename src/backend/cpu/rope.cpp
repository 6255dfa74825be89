#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void rope(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq, i64 pos_offset,
          RopeLayout layout, bool inverse) {
  const i64 half = head_dim / 2;
#pragma omp parallel for collapse(2) if (outer * seq * head_dim > 16384)
  for (i64 o = 0; o < outer; ++o) {
    for (i64 t = 0; t < seq; ++t) {
      const float* xr = x + (o * seq + t) * head_dim;
      float* yr = y + (o * seq + t) * head_dim;
      const auto pos = static_cast<float>(pos_offset + t);
      for (i64 i = 0; i < half; ++i) {
        const float angle = pos * inv_freq[i];
        const float c = std::cos(angle);
        const float s = inverse ? -std::sin(angle) : std::sin(angle);
        const i64 a = layout == RopeLayout::half ? i : 2 * i;
        const i64 b = layout == RopeLayout::half ? i + half : 2 * i + 1;
        const float x0 = xr[a], x1 = xr[b];
        yr[a] = x0 * c - x1 * s;
        yr[b] = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
