// Fused attention on the CPU, flash-style: scores exist only as one tile of query rows against
// the keys they may see, in a thread's own buffer; the forward pass keeps the log-sum-exp of
// each row, and the backward pass recomputes its tile of probabilities from it. Tiles are
// multiplied through single-threaded BLAS calls inside an OpenMP loop over heads.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace loracpp::backend::cpu {

namespace {

constexpr i64 kTile = 64;

// The tiles are multiplied inside an OpenMP team, one BLAS call per thread. OpenBLAS allowed
// threads of its own there runs those calls 20x slower (measured on the small preset's attention:
// 5 against 110 GFLOP/s), so for the span of a fused attention call it gets one.
class OneBlasThreadEach {
 public:
  OneBlasThreadEach() : previous_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~OneBlasThreadEach() { openblas_set_num_threads(previous_); }
  OneBlasThreadEach(const OneBlasThreadEach&) = delete;
  OneBlasThreadEach& operator=(const OneBlasThreadEach&) = delete;

 private:
  int previous_;
};

void gemm_1t(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
             i64 ldb, float beta, float* c, i64 ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// Keys [0, visible) that any query of rows [t0, t1) may see.
i64 visible_keys(const AttentionGeometry& g, i64 t1) {
  return g.causal ? std::clamp<i64>(t1 + g.kv_len - g.q_len, 0, g.kv_len) : g.kv_len;
}

// scores [rows, visible] = scale * q_tile kᵀ + mask, -inf where causality hides a key.
void tile_scores(const AttentionGeometry& g, const float* q_tile, const float* k, const float* mask_plane, i64 t0,
                 i64 rows, i64 visible, float* scores) {
  gemm_1t(false, true, rows, visible, g.head_dim, g.scale, q_tile, g.head_dim, k, g.head_dim, 0.0f, scores, visible);
  for (i64 r = 0; r < rows; ++r) {
    float* s = scores + r * visible;
    if (mask_plane) {
      const float* m = mask_plane + (t0 + r) * g.kv_len;
      for (i64 j = 0; j < visible; ++j) s[j] += m[j];
    }
    if (g.causal)
      for (i64 j = std::max<i64>(t0 + r + g.kv_len - g.q_len + 1, 0); j < visible; ++j)
        s[j] = -std::numeric_limits<float>::infinity();
  }
}

const float* mask_plane(const AttentionGeometry& g, const float* mask, i64 b, i64 head) {
  return mask ? mask + b * g.mask_batch_stride + head * g.mask_head_stride : nullptr;
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, const float* mask, float* out, float* lse,
                       const AttentionGeometry& g) {
  const OneBlasThreadEach blas_threads;
  const i64 heads = g.batch * g.kv_heads * g.group;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<std::size_t>(kTile * std::max<i64>(g.kv_len, 1)));
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < heads * ((g.q_len + kTile - 1) / kTile); ++item) {
      const i64 head = item / ((g.q_len + kTile - 1) / kTile), tile = item % ((g.q_len + kTile - 1) / kTile);
      const i64 b = head / (g.kv_heads * g.group), kvh = head / g.group % g.kv_heads;
      const i64 t0 = tile * kTile, rows = std::min(kTile, g.q_len - t0);
      const float* kh = k + (b * g.kv_heads + kvh) * g.kv_len * g.head_dim;
      const float* vh = v + (b * g.kv_heads + kvh) * g.kv_len * g.v_dim;
      const float* q_tile = q + (head * g.q_len + t0) * g.head_dim;
      float* o_tile = out + (head * g.q_len + t0) * g.v_dim;
      float* lse_tile = lse + head * g.q_len + t0;
      const i64 visible = visible_keys(g, t0 + rows);
      if (visible == 0) {  // nothing to attend to: zeros, as a softmax over nothing would be
        std::fill(o_tile, o_tile + rows * g.v_dim, 0.0f);
        std::fill(lse_tile, lse_tile + rows, -std::numeric_limits<float>::infinity());
        continue;
      }
      tile_scores(g, q_tile, kh, mask_plane(g, mask, b, head % (g.kv_heads * g.group)), t0, rows, visible,
                  scores.data());
      for (i64 r = 0; r < rows; ++r) {
        float* s = scores.data() + r * visible;
        float max = -std::numeric_limits<float>::infinity();
        for (i64 j = 0; j < visible; ++j) max = std::max(max, s[j]);
        if (max == -std::numeric_limits<float>::infinity()) {  // every key masked: no weight anywhere
          std::fill(s, s + visible, 0.0f);
          lse_tile[r] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float sum = exp_shifted(s, max, 1.0f, s, visible);
        const float inv = 1.0f / sum;
        for (i64 j = 0; j < visible; ++j) s[j] *= inv;
        lse_tile[r] = max + std::log(sum);
      }
      gemm_1t(false, false, rows, g.v_dim, visible, 1.0f, scores.data(), visible, vh, g.v_dim, 0.0f, o_tile, g.v_dim);
    }
  }
}

void attention_backward(const float* q, const float* k, const float* v, const float* mask, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttentionGeometry& g) {
  const OneBlasThreadEach blas_threads;
  // One item per key/value head, so its dk and dv have one writer.
#pragma omp parallel
  {
    std::vector<float> p(static_cast<std::size_t>(kTile * std::max<i64>(g.kv_len, 1)));
    std::vector<float> dp(p.size());
    std::vector<float> delta(static_cast<std::size_t>(kTile));
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < g.batch * g.kv_heads; ++item) {
      const i64 b = item / g.kv_heads;
      const float* kh = k + item * g.kv_len * g.head_dim;
      const float* vh = v + item * g.kv_len * g.v_dim;
      float* dkh = dk + item * g.kv_len * g.head_dim;
      float* dvh = dv + item * g.kv_len * g.v_dim;
      std::fill(dkh, dkh + g.kv_len * g.head_dim, 0.0f);
      std::fill(dvh, dvh + g.kv_len * g.v_dim, 0.0f);
      for (i64 member = 0; member < g.group; ++member) {
        const i64 head = item * g.group + member;  // index over [batch, kv_heads, group]
        for (i64 t0 = 0; t0 < g.q_len; t0 += kTile) {
          const i64 rows = std::min(kTile, g.q_len - t0);
          const float* q_tile = q + (head * g.q_len + t0) * g.head_dim;
          const float* o_tile = out + (head * g.q_len + t0) * g.v_dim;
          const float* do_tile = dout + (head * g.q_len + t0) * g.v_dim;
          const float* lse_tile = lse + head * g.q_len + t0;
          float* dq_tile = dq + (head * g.q_len + t0) * g.head_dim;
          const i64 visible = visible_keys(g, t0 + rows);
          if (visible == 0) {
            std::fill(dq_tile, dq_tile + rows * g.head_dim, 0.0f);
            continue;
          }
          tile_scores(g, q_tile, kh, mask_plane(g, mask, b, head % (g.kv_heads * g.group)), t0, rows, visible, p.data());
          for (i64 r = 0; r < rows; ++r) {  // p = exp(s - lse); rows with nothing visible stay 0
            float* pr = p.data() + r * visible;
            if (lse_tile[r] == -std::numeric_limits<float>::infinity()) {
              std::fill(pr, pr + visible, 0.0f);
            } else {
              exp_shifted(pr, lse_tile[r], 1.0f, pr, visible);
            }
            float d = 0;  // delta_r = sum_c dout[r, c] * out[r, c]
            for (i64 c = 0; c < g.v_dim; ++c) d += do_tile[r * g.v_dim + c] * o_tile[r * g.v_dim + c];
            delta[static_cast<std::size_t>(r)] = d;
          }
          // dv += pᵀ dout; dp = dout vᵀ; ds = p (dp - delta); dq = scale ds k; dk += scale dsᵀ q
          gemm_1t(true, false, visible, g.v_dim, rows, 1.0f, p.data(), visible, do_tile, g.v_dim, 1.0f, dvh, g.v_dim);
          gemm_1t(false, true, rows, visible, g.v_dim, 1.0f, do_tile, g.v_dim, vh, g.v_dim, 0.0f, dp.data(), visible);
          for (i64 r = 0; r < rows; ++r) {
            float* pr = p.data() + r * visible;
            const float* dpr = dp.data() + r * visible;
            const float d = delta[static_cast<std::size_t>(r)];
            for (i64 j = 0; j < visible; ++j) pr[j] *= dpr[j] - d;
          }
          gemm_1t(false, false, rows, g.head_dim, visible, g.scale, p.data(), visible, kh, g.head_dim, 0.0f, dq_tile,
                  g.head_dim);
          gemm_1t(true, false, visible, g.head_dim, rows, g.scale, p.data(), visible, q_tile, g.head_dim, 1.0f, dkh,
                  g.head_dim);
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
