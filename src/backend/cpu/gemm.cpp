#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace loracpp::backend::cpu {

namespace {
constexpr i64 kSmallProduct = i64{1} << 16;  // multiply-adds below which a plain loop beats BLAS's setup
// Inner dimensions up to this make a rank-k update (a LoRA branch's t Bᵀ or u A). Threaded BLAS
// splits those poorly: its threads spent more time yielding to each other than multiplying.
constexpr i64 kRankUpdate = 32;

// c = alpha op(a) op(b) + beta c for products too small to repay a library call (a LoRA branch on
// one generated token), vectorised along a contiguous run: the shared dimension when b is
// transposed (dot products), else the columns of c (a scaled row of b added per term).
void small_product(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                   const float* b, i64 ldb, float beta, float* c, i64 ldc) {
  for (i64 i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    auto a_at = [&](i64 p) { return trans_a ? a[p * lda + i] : a[i * lda + p]; };
    if (trans_b) {
      for (i64 j = 0; j < n; ++j) {
        const float* bj = b + j * ldb;
        float sum = 0;
        if (trans_a) {
          for (i64 p = 0; p < k; ++p) sum += a_at(p) * bj[p];
        } else {
          const float* ai = a + i * lda;
#pragma omp simd reduction(+ : sum)
          for (i64 p = 0; p < k; ++p) sum += ai[p] * bj[p];
        }
        ci[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * ci[j]);
      }
    } else {
      if (beta == 0.0f) {
        std::fill(ci, ci + n, 0.0f);
      } else if (beta != 1.0f) {
        for (i64 j = 0; j < n; ++j) ci[j] *= beta;
      }
      for (i64 p = 0; p < k; ++p) {
        const float s = alpha * a_at(p);
        const float* bp = b + p * ldb;
#pragma omp simd
        for (i64 j = 0; j < n; ++j) ci[j] += s * bp[j];
      }
    }
  }
}

// c = alpha a op(b) + beta c for small k. b is packed once in blocks of kRankBlock columns, each
// block's k rows contiguous (4 KiB at k = 16, where rows n apart would share L1 sets) and the last
// block padded with zeros. Each thread takes groups of kRankRows rows of c and walks them one
// column block at a time: the block of b stays in L1 for the whole group, and each row's block of
// c is held in registers while its k scaled rows of b are added, so c is loaded and stored once.
constexpr i64 kRankBlock = 64;
constexpr i64 kRankRows = 16;

void rank_update(bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b, i64 ldb,
                 float beta, float* c, i64 ldc) {
  const i64 blocks = (n + kRankBlock - 1) / kRankBlock;
  std::vector<float> packed(static_cast<std::size_t>(blocks * k * kRankBlock), 0.0f);
  for (i64 block = 0; block < blocks; ++block)
    for (i64 p = 0; p < k; ++p)
      for (i64 j = block * kRankBlock; j < std::min(n, (block + 1) * kRankBlock); ++j)
        packed[static_cast<std::size_t>((block * k + p) * kRankBlock + j % kRankBlock)] =
            trans_b ? b[j * ldb + p] : b[p * ldb + j];
  // The `cols` (at most kRankBlock) columns of one row's block: beta c + sum over p of scale[p] b[p].
  // A partial block goes through a local copy, so every load and store is a whole vector: masked
  // ones cost ten times as much on some CPUs (AMD's, for AVX2), which made this kernel run at a
  // seventh of its speed.
  auto row_block = [&](const float* scale, float* cb, const float* bp, i64 cols) {
#if defined(LORACPP_VECTOR_FLOATS)
    constexpr int kVectors = kRankBlock / Floats::kLanes;
    static_assert(kRankBlock % Floats::kLanes == 0);
    alignas(64) float staged[kRankBlock];
    float* out = cb;
    if (cols < kRankBlock) {
      out = staged;
      std::fill(std::copy(cb, cb + (beta == 0.0f ? 0 : cols), staged), staged + kRankBlock, 0.0f);
    }
    Floats acc[kVectors];
    for (int q = 0; q < kVectors; ++q)
      acc[q] = beta == 0.0f ? Floats::all(0.0f) : Floats::all(beta) * Floats::load(out + Floats::kLanes * q);
    for (i64 p = 0; p < k; ++p, bp += kRankBlock) {
      const Floats sp = Floats::all(scale[p]);
      for (int q = 0; q < kVectors; ++q) acc[q] = Floats::fma(sp, Floats::load(bp + Floats::kLanes * q), acc[q]);
    }
    for (int q = 0; q < kVectors; ++q) acc[q].store(out + Floats::kLanes * q);
    if (out == staged) std::copy(staged, staged + cols, cb);
#else
    for (i64 j = 0; j < cols; ++j) {
      float sum = beta == 0.0f ? 0.0f : beta * cb[j];
      for (i64 p = 0; p < k; ++p) sum += scale[p] * bp[p * kRankBlock + j];
      cb[j] = sum;
    }
#endif
  };
  const i64 groups = (m + kRankRows - 1) / kRankRows;
#pragma omp parallel for if (m * n * k > kSmallProduct)
  for (i64 group = 0; group < groups; ++group) {
    const i64 i0 = group * kRankRows, i1 = std::min(m, i0 + kRankRows);
    float scale[kRankRows][kRankUpdate];
    for (i64 i = i0; i < i1; ++i)
      for (i64 p = 0; p < k; ++p) scale[i - i0][p] = alpha * a[i * lda + p];
    for (i64 block = 0; block < blocks; ++block) {
      const i64 j0 = block * kRankBlock, cols = std::min(kRankBlock, n - j0);
      const float* bp = packed.data() + block * k * kRankBlock;
      for (i64 i = i0; i < i1; ++i) row_block(scale[i - i0], c + i * ldc + j0, bp, cols);
    }
  }
}
}  // namespace

void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
          i64 ldb, float beta, float* c, i64 ldc) {
  count_gemm(m, n, k);
  if (m == 0 || n == 0) return;
  if (m * n * k <= kSmallProduct) {  // e.g. a LoRA branch on one token: a library call costs more than the work
    small_product(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (m == 1) {  // one row (a generated token): a matrix-vector product, which BLAS runs without packing b
    cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, static_cast<blasint>(trans_b ? n : k),
                static_cast<blasint>(trans_b ? k : n), alpha, b, static_cast<blasint>(ldb), a,
                static_cast<blasint>(trans_a ? lda : 1), beta, c, 1);
    return;
  }
  if (k <= kRankUpdate && !trans_a) return rank_update(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

}  // namespace loracpp::backend::cpu
