#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

namespace {
constexpr i64 kSmallProduct = i64{1} << 16;  // multiply-adds below which a plain loop beats BLAS's setup
// Inner dimensions up to this make a rank-k update (a LoRA branch's t Bᵀ or u A). Threaded BLAS
// splits those poorly: its threads spent more time yielding to each other than multiplying.
constexpr i64 kRankUpdate = 32;

// c = alpha a op(b) + beta c for small k: each thread takes whole rows of c. A row goes in blocks
// of kRankBlock columns held in registers while the k scaled rows of b (packed as [k, n] once) are
// added, so each element of c is loaded and stored once, not once per k (a third less time when c
// is in cache; from memory both forms wait on it).
constexpr i64 kRankBlock = 64;
void rank_update(bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b, i64 ldb,
                 float beta, float* c, i64 ldc) {
  std::vector<float> packed;
  const float* rows = b;
  i64 ld = ldb;
  if (trans_b) {
    packed.resize(static_cast<std::size_t>(k * n));
    for (i64 j = 0; j < n; ++j)
      for (i64 p = 0; p < k; ++p) packed[static_cast<std::size_t>(p * n + j)] = b[j * ldb + p];
    rows = packed.data();
    ld = n;
  }
#pragma omp parallel for if (m * n * k > kSmallProduct)
  for (i64 i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    float scale[kRankUpdate];
    for (i64 p = 0; p < k; ++p) scale[p] = alpha * a[i * lda + p];
    i64 j0 = 0;
    for (; j0 + kRankBlock <= n; j0 += kRankBlock) {
      float acc[kRankBlock];
#pragma GCC unroll 64
      for (i64 j = 0; j < kRankBlock; ++j) acc[j] = beta == 0.0f ? 0.0f : beta * ci[j0 + j];
      for (i64 p = 0; p < k; ++p) {
        const float* bp = rows + p * ld + j0;
#pragma GCC unroll 64
        for (i64 j = 0; j < kRankBlock; ++j) acc[j] += scale[p] * bp[j];
      }
#pragma GCC unroll 64
      for (i64 j = 0; j < kRankBlock; ++j) ci[j0 + j] = acc[j];
    }
    for (i64 j = j0; j < n; ++j) {
      float sum = beta == 0.0f ? 0.0f : beta * ci[j];
      for (i64 p = 0; p < k; ++p) sum += scale[p] * rows[p * ld + j];
      ci[j] = sum;
    }
  }
}
}  // namespace

void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
          i64 ldb, float beta, float* c, i64 ldc) {
  count_gemm(m, n, k);
  if (m == 0 || n == 0) return;
  if (m * n * k <= kSmallProduct) {  // e.g. a LoRA branch on one token: a library call costs more than the work
    for (i64 i = 0; i < m; ++i)
      for (i64 j = 0; j < n; ++j) {
        float sum = 0;
        for (i64 p = 0; p < k; ++p) sum += (trans_a ? a[p * lda + i] : a[i * lda + p]) * (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
        c[i * ldc + j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]);
      }
    return;
  }
  if (k <= kRankUpdate && !trans_a) return rank_update(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

}  // namespace loracpp::backend::cpu
