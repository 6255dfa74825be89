#include <cblas.h>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

namespace {
constexpr i64 kSmallProduct = i64{1} << 16;  // multiply-adds below which a plain loop beats BLAS's setup
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
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

}  // namespace loracpp::backend::cpu
