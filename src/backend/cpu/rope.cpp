#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

namespace {

// The rotation's cosines and sines for positions [offset, offset + seq) and the frequencies, [seq,
// half] each. Every layer's call in a pass, and each one's backward, asks for the same angles, so
// the calling thread keeps the latest: each angle costs a libm sin and cos, which over a training
// step's positions took as long as the rotation itself.
struct RopeTables {
  std::vector<float> freqs;
  i64 seq = -1, offset = 0;
  std::vector<float> cos, sin;
};

const RopeTables& rope_tables(const float* inv_freq, i64 half, i64 seq, i64 offset) {
  thread_local RopeTables tables;
  if (tables.seq == seq && tables.offset == offset && static_cast<i64>(tables.freqs.size()) == half &&
      std::equal(tables.freqs.begin(), tables.freqs.end(), inv_freq))
    return tables;
  tables.freqs.assign(inv_freq, inv_freq + half);
  tables.seq = seq;
  tables.offset = offset;
  tables.cos.resize(static_cast<std::size_t>(seq * half));
  tables.sin.resize(tables.cos.size());
  float* cos_table = tables.cos.data();
  float* sin_table = tables.sin.data();
#pragma omp parallel for if (seq * half >= 4096)
  for (i64 t = 0; t < seq; ++t) {
    const auto pos = static_cast<float>(offset + t);
    for (i64 i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_table[t * half + i] = std::cos(angle);
      sin_table[t * half + i] = std::sin(angle);
    }
  }
  return tables;
}

}  // namespace

void rope(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq, i64 pos_offset,
          RopeLayout layout, bool inverse) {
  const i64 half = head_dim / 2;
  const RopeTables& tables = rope_tables(inv_freq, half, seq, pos_offset);
  const float* cos_table = tables.cos.data();
  const float* sin_table = tables.sin.data();
  const float sign = inverse ? -1.0f : 1.0f;  // the inverse rotation: the opposite angles' sines
#pragma omp parallel for collapse(2) if (outer * seq * head_dim > 16384)
  for (i64 o = 0; o < outer; ++o) {
    for (i64 t = 0; t < seq; ++t) {
      const float* xr = x + (o * seq + t) * head_dim;
      float* yr = y + (o * seq + t) * head_dim;
      const float* c = cos_table + t * half;
      const float* s = sin_table + t * half;
      if (layout == RopeLayout::half) {
        for (i64 i = 0; i < half; ++i) {
          const float x0 = xr[i], x1 = xr[i + half], si = sign * s[i];
          yr[i] = x0 * c[i] - x1 * si;
          yr[i + half] = x0 * si + x1 * c[i];
        }
      } else {
        for (i64 i = 0; i < half; ++i) {
          const float x0 = xr[2 * i], x1 = xr[2 * i + 1], si = sign * s[i];
          yr[2 * i] = x0 * c[i] - x1 * si;
          yr[2 * i + 1] = x0 * si + x1 * c[i];
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
