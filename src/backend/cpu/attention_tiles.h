#pragma once
// What the fused attention's two ways of multiplying its tiles share (attention.cpp: through a
// library's products; attention_pairs.cpp: our own over packed pairs of bf16 terms): which keys a
// tile of query rows may see, and the scores' additive mask and causal cut.
#include <algorithm>
#include <limits>

#include "backend/cpu/vec_math.h"
#include "backend/kernels.h"
#include "core/dtype.h"

namespace loracpp::backend::cpu {

// Keys [0, visible) that any query of rows [t0, t1) may see.
inline i64 visible_keys(const AttentionGeometry& g, i64 t1) {
  return g.causal ? std::clamp<i64>(t1 + g.kv_len - g.q_len, 0, g.kv_len) : g.kv_len;
}

// Keys [0, seen) that query row t sees.
inline i64 keys_seen(const AttentionGeometry& g, i64 t) { return visible_keys(g, t + 1); }

// The additive mask's plane for batch b and query head `head` (within the batch), or null.
inline const float* mask_plane(const AttentionGeometry& g, const float* mask, i64 b, i64 head) {
  return mask ? mask + b * g.mask_batch_stride + head * g.mask_head_stride : nullptr;
}

// The mask added to a tile's scores [rows, visible] (rows from query t0), over the keys each row
// sees.
inline void add_mask(const AttentionGeometry& g, const float* mask_plane, i64 t0, i64 rows, i64 visible,
                     float* scores) {
  if (!mask_plane) return;
  for (i64 r = 0; r < rows; ++r) {
    float* s = scores + r * visible;
    const float* m = mask_plane + (t0 + r) * g.kv_len;
    const i64 seen = g.causal ? keys_seen(g, t0 + r) : visible;
    for (i64 j = 0; j < seen; ++j) s[j] += m[j];
  }
}

// The mask added to a tile's scores, and -inf where causality hides a key; scores past a row's
// last seen key need not have been computed.
inline void mask_scores(const AttentionGeometry& g, const float* mask_plane, i64 t0, i64 rows, i64 visible,
                        float* scores) {
  add_mask(g, mask_plane, t0, rows, visible, scores);
  if (!g.causal) return;
  for (i64 r = 0; r < rows; ++r)
    std::fill(scores + r * visible + keys_seen(g, t0 + r), scores + (r + 1) * visible,
              -std::numeric_limits<float>::infinity());
}

// out[j] = p[j] (dp[j] - d) rounded to bf16: a row of the scores' gradient, made straight into the
// rounded operand of the bf16 products that read it.
inline void score_gradient_bf16(const float* p, const float* dp, float d, std::uint16_t* out, i64 n) {
  i64 j = 0;
#if defined(LORACPP_VECTOR_FLOATS)
  const Floats dv = Floats::all(d);
  for (; j + Floats::kLanes <= n; j += Floats::kLanes)
    (Floats::load(p + j) * (Floats::load(dp + j) - dv)).store_bf16(out + j);
#endif
  for (; j < n; ++j) out[j] = float_to_bf16(p[j] * (dp[j] - d));
}

}  // namespace loracpp::backend::cpu
