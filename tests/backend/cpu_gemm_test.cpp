// The CPU gemm kernel against a double-precision loop, on each of its paths: the plain loop for
// tiny products, the rank-k row update for inner dimensions up to 32 (whole and partial column
// blocks, b as it lies or transposed, each beta) and BLAS beyond.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

struct Case {
  bool trans_a, trans_b;
  i64 m, n, k;
  float alpha, beta;
};

std::vector<float> values(i64 count, float phase) {
  std::vector<float> out(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::sin(phase + 0.37f * static_cast<float>(i));
  return out;
}

void expect_matches_reference(const Case& c) {
  const i64 lda = (c.trans_a ? c.m : c.k) + 3, ldb = (c.trans_b ? c.k : c.n) + 2, ldc = c.n + 5;
  const auto a = values((c.trans_a ? c.k : c.m) * lda, 0.1f), b = values((c.trans_b ? c.n : c.k) * ldb, 0.7f);
  auto got = values(c.m * ldc, 1.3f);
  const auto before = got;
  gemm(c.trans_a, c.trans_b, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, got.data(), ldc);
  double worst = 0;
  for (i64 i = 0; i < c.m; ++i) {
    for (i64 j = 0; j < c.n; ++j) {
      double sum = 0;
      for (i64 p = 0; p < c.k; ++p)
        sum += static_cast<double>(c.trans_a ? a[p * lda + i] : a[i * lda + p]) *
               static_cast<double>(c.trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      const double want = c.alpha * sum + (c.beta == 0.0f ? 0.0 : c.beta * static_cast<double>(before[i * ldc + j]));
      worst = std::max(worst, std::abs(static_cast<double>(got[i * ldc + j]) - want));
    }
    for (i64 j = c.n; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], before[i * ldc + j]) << "wrote past n in row " << i;
  }
  EXPECT_LT(worst, 1e-4 * static_cast<double>(c.k)) << "m " << c.m << " n " << c.n << " k " << c.k << " trans_a "
                                                      << c.trans_a << " trans_b " << c.trans_b << " beta " << c.beta;
}

TEST(CpuGemm, RankUpdatesMatchTheReferenceOnWholeAndPartialColumnBlocks) {
  for (const bool trans_b : {false, true})
    for (const float beta : {0.0f, 1.0f, 0.5f})
      for (const i64 n : {64, 200, 13}) expect_matches_reference({false, trans_b, 300, n, 16, 0.75f, beta});
  expect_matches_reference({false, true, 257, 130, 32, 2.0f, 1.0f});  // the largest inner dimension it takes
  expect_matches_reference({false, false, 129, 96, 1, 1.0f, 0.0f});
}

TEST(CpuGemm, TinyAndBlasProductsMatchTheReference) {
  for (const bool trans_a : {false, true})  // below the BLAS threshold, each layout
    for (const bool trans_b : {false, true}) expect_matches_reference({trans_a, trans_b, 7, 9, 5, 1.5f, 0.5f});
  expect_matches_reference({false, true, 1, 16, 768, 1.0f, 0.0f});  // one token through A: long dot products
  expect_matches_reference({false, true, 1, 768, 16, 2.0f, 1.0f});  // and back through B into the output
  expect_matches_reference({false, false, 1, 768, 16, 2.0f, 1.0f});
  expect_matches_reference({true, true, 70, 90, 40, 1.0f, 1.0f});    // transposed a: BLAS even for small k
  expect_matches_reference({false, true, 120, 150, 48, 0.5f, 0.0f});  // k past the rank-update limit
}

}  // namespace
}  // namespace loracpp::backend::cpu
