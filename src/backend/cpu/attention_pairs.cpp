// The fused attention's bf16 tiles through our own products over pairs of terms. The tiles,
// softmax and log-sum-exp are attention.cpp's (scores only as one tile of 128 query rows against
// the keys they may see; the backward pass recomputes its probabilities from the log-sum-exp); what
// changes is how the tiles are multiplied. Through oneDNN each product packed its operands and
// dispatched anew: half of a bf16 attention's time went outside the products' own instructions.
// Here each key and value head is packed once per call in the layouts its products read (keys
// transposed for the scores, keys as they lie for the query gradient; values as they lie for the
// output, transposed for the probabilities' gradient); queries, probabilities and gradients are
// read as they lie, or, where a product runs down their rows (dv += pᵀ dout, dk += dsᵀ q), packed
// per tile; and the blocks above the causal diagonal are skipped six rows at a time rather than a
// tile at a time.
#include "backend/cpu/attention_pairs.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/attention_tiles.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16_pairs.h"
#include "backend/cpu/scratch.h"
#include "backend/cpu/vec_math.h"
#include "core/dtype.h"

namespace loracpp::backend::cpu {

namespace {

constexpr i64 kTileRows = 128;  // query rows per tile, as attention.cpp's bf16 tiles

// Each thread's buffers, kept from call to call: the calling thread's bf16 copies of q and the
// output gradient and the packed heads of a forward call; and each team member's head in bf16,
// packed heads of a backward item, and a tile's scores, gradients, rounded operand and its pairs.
struct PairsScratch {
  Scratch<std::uint16_t> q, dout, head, rounded;
  Scratch<std::uint32_t> keys_t, keys, values, values_t, tile_pairs, rows_pairs;
  Scratch<float> scores, grads;
};
thread_local PairsScratch scratch;

// Head h of x, n values, in bf16: in place, or converted into `buffer` by the calling thread (a
// member of the team).
const std::uint16_t* bf16_head(HeadRows x, i64 h, i64 n, Scratch<std::uint16_t>& buffer) {
  if (x.bf16) return x.bf16 + h * x.stride;
  std::uint16_t* out = buffer.at_least(n);
  to_bf16(x.f32 + h * x.stride, out, n);
  return out;
}

const std::uint16_t* bf16_copy(const float* x, i64 n, Scratch<std::uint16_t>& into) {
  std::uint16_t* out = into.at_least(n);
  convert(x, DType::f32, out, DType::bf16, n);
  return out;
}

Triangle when_causal(const AttentionGeometry& g, Triangle::Kind kind, i64 diagonal) {
  return g.causal ? Triangle{kind, diagonal} : Triangle{};
}

// The rounded row length of a tile's probabilities: whole pairs, the odd key's partner zero.
i64 even(i64 n) { return n + n % 2; }

}  // namespace

bool attention_pairs_fit(const AttentionGeometry& g) {
  return bf16_pairs_built() && g.head_dim % 2 == 0 && g.v_dim % 2 == 0;
}

void attention_forward_pairs(const float* q, HeadRows k, HeadRows v, const float* mask, float* out, float* lse,
                             const AttentionGeometry& g) {
  const i64 heads = g.batch * g.kv_heads * g.group, kv_items = g.batch * g.kv_heads;
  const i64 tiles = (g.q_len + kTileRows - 1) / kTileRows;
  const i64 dim_pairs = g.head_dim / 2, key_pairs = (g.kv_len + 1) / 2;
  // Each head's keys transposed, and values, packed (gemm_bf16_pairs.h).
  const i64 keys_size = packed_size(dim_pairs, g.kv_len), values_size = packed_size(key_pairs, g.v_dim);
  const std::uint16_t* q16 = bf16_copy(q, heads * g.q_len * g.head_dim, scratch.q);
  std::uint32_t* const keys_t = scratch.keys_t.at_least(kv_items * keys_size);
  std::uint32_t* const values = scratch.values.at_least(kv_items * values_size);
  const i64 rows_at_most = std::min(kTileRows, g.q_len);
#pragma omp parallel
  {
#pragma omp for
    for (i64 h = 0; h < kv_items; ++h) {
      pack_column_pairs(bf16_head(k, h, g.kv_len * g.head_dim, scratch.head), g.head_dim, g.kv_len, g.head_dim,
                        keys_t + h * keys_size);
      pack_row_pairs(bf16_head(v, h, g.kv_len * g.v_dim, scratch.head), g.v_dim, g.kv_len, g.v_dim,
                     values + h * values_size);
    }
    // Every tile writes these before it reads them.
    float* const scores = scratch.scores.at_least(rows_at_most * g.kv_len);
    std::uint16_t* const p16 = scratch.rounded.at_least(rows_at_most * even(g.kv_len));
    std::vector<float> row_scale(static_cast<std::size_t>(rows_at_most));  // 1/sum of each row's exponentials
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < heads * tiles; ++item) {
      const i64 head = item / tiles, tile = item % tiles;
      const i64 b = head / (g.kv_heads * g.group), kv_item = head / g.group;
      const i64 t0 = tile * kTileRows, rows = std::min(kTileRows, g.q_len - t0);
      float* o_tile = out + (head * g.q_len + t0) * g.v_dim;
      float* lse_tile = lse + head * g.q_len + t0;
      const i64 visible = visible_keys(g, t0 + rows), ld16 = even(visible);
      if (visible == 0) {  // nothing to attend to: zeros, as a softmax over nothing would be
        std::fill(o_tile, o_tile + rows * g.v_dim, 0.0f);
        std::fill(lse_tile, lse_tile + rows, -std::numeric_limits<float>::infinity());
        continue;
      }
      const i64 diagonal = t0 + g.kv_len - g.q_len;  // row r sees keys up to r + diagonal
      gemm_bf16_pairs(rows, visible, dim_pairs, g.scale,
                      bf16_rows_as_pairs(q16 + (head * g.q_len + t0) * g.head_dim, g.head_dim),
                      keys_t + kv_item * keys_size, dim_pairs, 0.0f, scores, visible,
                      when_causal(g, Triangle::columns_to_diagonal, diagonal));
      add_mask(g, mask_plane(g, mask, b, head % (g.kv_heads * g.group)), t0, rows, visible, scores);
      // Each row's exponentials against its largest score over the keys it sees, unnormalised,
      // rounded into p16 (zero past them); the output's row (v_dim values, not `visible`) is
      // scaled by 1/sum after the product.
      for (i64 r = 0; r < rows; ++r) {
        const float* s = scores + r * visible;
        std::uint16_t* pr = p16 + r * ld16;
        const i64 seen = g.causal ? keys_seen(g, t0 + r) : visible;
        std::fill(pr + seen, pr + ld16, std::uint16_t{0});
        const float max = max_of(s, seen);
        if (max == -std::numeric_limits<float>::infinity()) {  // every key masked: no weight anywhere
          std::fill(pr, pr + seen, std::uint16_t{0});
          row_scale[static_cast<std::size_t>(r)] = 0.0f;
          lse_tile[r] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float sum = exp_shifted(s, max, 1.0f, nullptr, seen, pr);
        row_scale[static_cast<std::size_t>(r)] = 1.0f / sum;
        lse_tile[r] = max + std::log(sum);
      }
      gemm_bf16_pairs(rows, g.v_dim, ld16 / 2, 1.0f, bf16_rows_as_pairs(p16, ld16), values + kv_item * values_size,
                      key_pairs, 0.0f, o_tile, g.v_dim, when_causal(g, Triangle::terms_to_diagonal, diagonal));
      for (i64 r = 0; r < rows; ++r) {
        float* o = o_tile + r * g.v_dim;
        const float inv = row_scale[static_cast<std::size_t>(r)];
        for (i64 c = 0; c < g.v_dim; ++c) o[c] *= inv;
      }
    }
  }
}

void attention_backward_pairs(const float* q, HeadRows k, HeadRows v, const float* mask, const float* out,
                              const float* lse, const float* dout, float* dq, float* dk, float* dv,
                              const AttentionGeometry& g) {
  const i64 kv_items = g.batch * g.kv_heads, q_elements = kv_items * g.group * g.q_len;
  const i64 dim_pairs = g.head_dim / 2, value_pairs = g.v_dim / 2, key_pairs = (g.kv_len + 1) / 2;
  const std::uint16_t* q16 = bf16_copy(q, q_elements * g.head_dim, scratch.q);
  const std::uint16_t* do16 = bf16_copy(dout, q_elements * g.v_dim, scratch.dout);
  const i64 tile_pairs = (kTileRows + 1) / 2;
  // One item per key/value head, so its dk and dv have one writer.
#pragma omp parallel
  {
    // The item's packed heads, and a tile's probabilities, their gradient, the rounded operand and
    // the pairs down its rows (of p, then of ds); the tile's rows of dout and q as pairs: every tile
    // writes these before it reads them.
    std::uint32_t* const keys_t = scratch.keys_t.at_least(packed_size(dim_pairs, g.kv_len));
    std::uint32_t* const keys = scratch.keys.at_least(packed_size(key_pairs, g.head_dim));
    std::uint32_t* const values_t = scratch.values_t.at_least(packed_size(value_pairs, g.kv_len));
    float* const p = scratch.scores.at_least(kTileRows * g.kv_len);
    float* const dp = scratch.grads.at_least(kTileRows * g.kv_len);
    std::uint16_t* const p16 = scratch.rounded.at_least(kTileRows * even(g.kv_len));
    std::uint32_t* const down = scratch.tile_pairs.at_least(tile_pairs * g.kv_len);
    const i64 dout_size = packed_size(tile_pairs, g.v_dim);
    std::uint32_t* const dout_pairs = scratch.rows_pairs.at_least(dout_size + packed_size(tile_pairs, g.head_dim));
    std::uint32_t* const q_pairs = dout_pairs + dout_size;
    std::vector<float> delta(static_cast<std::size_t>(kTileRows));
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < kv_items; ++item) {
      const i64 b = item / g.kv_heads;
      const std::uint16_t* k16 = bf16_head(k, item, g.kv_len * g.head_dim, scratch.head);
      pack_column_pairs(k16, g.head_dim, g.kv_len, g.head_dim, keys_t);
      pack_row_pairs(k16, g.head_dim, g.kv_len, g.head_dim, keys);
      pack_column_pairs(bf16_head(v, item, g.kv_len * g.v_dim, scratch.head), g.v_dim, g.kv_len, g.v_dim, values_t);
      float* dkh = dk + item * g.kv_len * g.head_dim;
      float* dvh = dv + item * g.kv_len * g.v_dim;
      std::fill(dkh, dkh + g.kv_len * g.head_dim, 0.0f);
      std::fill(dvh, dvh + g.kv_len * g.v_dim, 0.0f);
      for (i64 member = 0; member < g.group; ++member) {
        const i64 head = item * g.group + member;  // index over [batch, kv_heads, group]
        for (i64 t0 = 0; t0 < g.q_len; t0 += kTileRows) {
          const i64 rows = std::min(kTileRows, g.q_len - t0), row_pairs = (rows + 1) / 2;
          const std::uint16_t* q_tile = q16 + (head * g.q_len + t0) * g.head_dim;
          const std::uint16_t* do_tile16 = do16 + (head * g.q_len + t0) * g.v_dim;
          const float* do_tile = dout + (head * g.q_len + t0) * g.v_dim;
          const float* o_tile = out + (head * g.q_len + t0) * g.v_dim;
          const float* lse_tile = lse + head * g.q_len + t0;
          float* dq_tile = dq + (head * g.q_len + t0) * g.head_dim;
          const i64 visible = visible_keys(g, t0 + rows), ld16 = even(visible);
          if (visible == 0) {
            std::fill(dq_tile, dq_tile + rows * g.head_dim, 0.0f);
            continue;
          }
          const i64 diagonal = t0 + g.kv_len - g.q_len;
          gemm_bf16_pairs(rows, visible, dim_pairs, g.scale, bf16_rows_as_pairs(q_tile, g.head_dim), keys_t, dim_pairs,
                          0.0f, p, visible, when_causal(g, Triangle::columns_to_diagonal, diagonal));
          add_mask(g, mask_plane(g, mask, b, head % (g.kv_heads * g.group)), t0, rows, visible, p);
          // p = exp(s - lse) over the keys each row sees, rounded into p16 as it is written (zero past
          // them); rows with nothing visible are 0.
          for (i64 r = 0; r < rows; ++r) {
            float* pr = p + r * visible;
            std::uint16_t* pr16 = p16 + r * ld16;
            const i64 seen = g.causal ? keys_seen(g, t0 + r) : visible;
            std::fill(pr16 + seen, pr16 + ld16, std::uint16_t{0});
            if (lse_tile[r] == -std::numeric_limits<float>::infinity()) {
              std::fill(pr, pr + seen, 0.0f);
              std::fill(pr16, pr16 + seen, std::uint16_t{0});
            } else {
              exp_shifted(pr, lse_tile[r], 1.0f, pr, seen, pr16);
            }
            float d = 0;  // delta_r = sum_c dout[r, c] * out[r, c]
            const float *dor = do_tile + r * g.v_dim, *or_ = o_tile + r * g.v_dim;
#pragma omp simd reduction(+ : d)
            for (i64 c = 0; c < g.v_dim; ++c) d += dor[c] * or_[c];
            delta[static_cast<std::size_t>(r)] = d;
          }
          // dv += pᵀ dout: p's pairs down its rows, read transposed, against dout's rows as pairs.
          pack_rows_down(p16, ld16, rows, visible, down);
          pack_row_pairs(do_tile16, g.v_dim, rows, g.v_dim, dout_pairs);
          gemm_bf16_pairs(visible, g.v_dim, row_pairs, 1.0f, {down, 1, visible}, dout_pairs, row_pairs, 1.0f, dvh,
                          g.v_dim, when_causal(g, Triangle::terms_from_diagonal, diagonal));
          // dp = dout vᵀ; ds = p (dp - delta), rounded into p16, zero past each row's keys (where dp
          // was not computed).
          gemm_bf16_pairs(rows, visible, value_pairs, 1.0f, bf16_rows_as_pairs(do_tile16, g.v_dim), values_t,
                          value_pairs, 0.0f, dp, visible, when_causal(g, Triangle::columns_to_diagonal, diagonal));
          for (i64 r = 0; r < rows; ++r) {
            const i64 seen = g.causal ? keys_seen(g, t0 + r) : visible;
            std::uint16_t* ds = p16 + r * ld16;
            score_gradient_bf16(p + r * visible, dp + r * visible, delta[static_cast<std::size_t>(r)], ds, seen);
            std::fill(ds + seen, ds + ld16, std::uint16_t{0});
          }
          // dq = scale ds k; dk += scale dsᵀ q.
          gemm_bf16_pairs(rows, g.head_dim, ld16 / 2, g.scale, bf16_rows_as_pairs(p16, ld16), keys, key_pairs, 0.0f,
                          dq_tile, g.head_dim, when_causal(g, Triangle::terms_to_diagonal, diagonal));
          pack_rows_down(p16, ld16, rows, visible, down);
          pack_row_pairs(q_tile, g.head_dim, rows, g.head_dim, q_pairs);
          gemm_bf16_pairs(visible, g.head_dim, row_pairs, g.scale, {down, 1, visible}, q_pairs, row_pairs, 1.0f, dkh,
                          g.head_dim, when_causal(g, Triangle::terms_from_diagonal, diagonal));
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
