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

namespace {

// One row of head_dim values rotated by its position's angles (c, s: that position's cosines and
// sines); sign -1 rotates back.
inline void rotate_row(const float* xr, float* yr, const float* c, const float* s, i64 half, float sign,
                       RopeLayout layout) {
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

}  // namespace

void rope(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq, i64 pos_offset,
          RopeLayout layout, bool inverse) {
  const i64 half = head_dim / 2;
  const RopeTables& tables = rope_tables(inv_freq, half, seq, pos_offset);
  const float sign = inverse ? -1.0f : 1.0f;  // the inverse rotation: the opposite angles' sines
#pragma omp parallel for collapse(2) if (outer * seq * head_dim > 16384)
  for (i64 o = 0; o < outer; ++o)
    for (i64 t = 0; t < seq; ++t)
      rotate_row(x + (o * seq + t) * head_dim, y + (o * seq + t) * head_dim, tables.cos.data() + t * half,
                 tables.sin.data() + t * half, half, sign, layout);
}

// Each position's rows of every head (contiguous in the projection's layout) rotated by the same
// angles, read from one layout and written to the other: the transposing copy between the two
// layouts costs nothing beyond the rotation's own pass.
void rope_heads(const float* x, float* y, i64 batch, i64 heads, i64 seq, i64 head_dim, const float* inv_freq,
                i64 pos_offset, RopeLayout layout, bool inverse, bool to_heads) {
  const i64 half = head_dim / 2;
  const RopeTables& tables = rope_tables(inv_freq, half, seq, pos_offset);
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) if (batch * seq * heads * head_dim > 16384)
  for (i64 b = 0; b < batch; ++b)
    for (i64 t = 0; t < seq; ++t)
      for (i64 h = 0; h < heads; ++h) {
        const i64 projected = ((b * seq + t) * heads + h) * head_dim, split = ((b * heads + h) * seq + t) * head_dim;
        rotate_row(x + (to_heads ? projected : split), y + (to_heads ? split : projected), tables.cos.data() + t * half,
                   tables.sin.data() + t * half, half, sign, layout);
      }
}

}  // namespace loracpp::backend::cpu
