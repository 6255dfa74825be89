// The CPU gemm kernel against a double-precision loop, on each of its paths: the plain loop for
// tiny products (short dot products eight at a time), BLAS's matrix-vector product for one row,
// the rank-k row update for inner dimensions up to 32 (whole and partial column blocks, b as it
// lies or transposed, each beta), the narrow products (few columns of c, or few rows of a
// transposed product) and BLAS beyond; and the bf16 kernel, exact products of bf16 values summed
// in f32, on its paths where the CPU has no native bf16 products (b read in place for a few rows,
// widened a panel at a time beyond), with alpha and beta; our AVX512-BF16 kernels for few
// columns and for short inner dimensions; and a frozen product with a LoRA expansion in one call.
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_bf16_narrow.h"
#include "backend/cpu/gemm_bf16_short.h"
#include "backend/threads.h"
#include "core/dtype.h"
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

TEST(CpuGemm, NarrowProductsMatchTheReferenceForEveryWidthAndRowCount) {
  for (const i64 n : {1, 8, 13, 16, 24}) {
    for (const float beta : {0.0f, 1.0f, 0.5f}) {
      expect_matches_reference({false, true, 301, n, 300, 0.75f, beta});   // x Aᵀ: rows of a, b transposed
      expect_matches_reference({false, false, 97, n, 520, 1.5f, beta});    // g B
      expect_matches_reference({true, false, 203, n, 300, 0.5f, beta});    // gᵀ t: a read by columns
      expect_matches_reference({true, false, n, 203, 300, 2.0f, beta});    // uᵀ x: the transposed product
    }
  }
  expect_matches_reference({true, false, 50, 16, 129, 1.0f, 0.0f});  // one tile and one term more
  expect_matches_reference({false, true, 5, 16, 4000, 1.0f, 1.0f});  // fewer rows than one block
}

TEST(CpuGemm, TinyAndBlasProductsMatchTheReference) {
  for (const bool trans_a : {false, true})  // below the BLAS threshold, each layout
    for (const bool trans_b : {false, true}) expect_matches_reference({trans_a, trans_b, 7, 9, 5, 1.5f, 0.5f});
  for (const i64 k : {8, 16, 24, 32})  // short dot products, eight at a time, and a tail of 3
    for (const float beta : {0.0f, 1.0f, 0.5f}) expect_matches_reference({false, true, 2, 779, k, 0.5f, beta});
  expect_matches_reference({false, true, 1, 16, 768, 1.0f, 0.0f});  // one token through A: long dot products
  expect_matches_reference({false, true, 1, 768, 16, 2.0f, 1.0f});  // and back through B into the output
  expect_matches_reference({false, false, 1, 768, 16, 2.0f, 1.0f});
  expect_matches_reference({true, true, 70, 90, 40, 1.0f, 1.0f});    // transposed a: BLAS even for small k
  expect_matches_reference({false, true, 120, 150, 48, 0.5f, 0.0f});  // k past the rank-update limit
  for (const bool trans_a : {false, true})  // one row past the tiny limit: a matrix-vector product
    for (const bool trans_b : {false, true}) expect_matches_reference({trans_a, trans_b, 1, 700, 300, 0.5f, 0.5f});
}

// beta = 0 means c is not read: output buffers come uninitialised from the allocator, and may hold
// a NaN or an infinity (masked scores) from an earlier tensor. Each path, the one-row product included.
TEST(CpuGemm, BetaZeroOverwritesNonFiniteValuesOnEveryPath) {
  for (const auto& [m, n, k] :
       std::vector<std::array<i64, 3>>{{3, 4, 5}, {1, 700, 300}, {300, 64, 16}, {120, 150, 48}, {300, 13, 200}, {13, 300, 200}, {1, 40, 16}})
    for (const bool trans_a : {false, true})
      for (const bool trans_b : {false, true}) {
        const auto a = values(m * k, 0.3f), b = values(n * k, 0.8f);
        std::vector<float> c(static_cast<std::size_t>(m * n));
        for (std::size_t i = 0; i < c.size(); ++i)
          c[i] = i % 2 ? std::numeric_limits<float>::quiet_NaN() : -std::numeric_limits<float>::infinity();
        gemm(trans_a, trans_b, m, n, k, 1.0f, a.data(), trans_a ? m : k, b.data(), trans_b ? k : n, 0.0f, c.data(), n);
        for (std::size_t i = 0; i < c.size(); ++i)
          ASSERT_TRUE(std::isfinite(c[i])) << "m " << m << " n " << n << " k " << k << " trans_a " << trans_a
                                           << " trans_b " << trans_b << " at " << i;
      }
}

using Bf16Product = void (*)(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                             const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);

// A bf16 product against a double-precision loop over the same bf16 values, a and b with padded
// rows: c = alpha a op(b) + beta c. With beta 0, c starts as NaN, which must not be read.
void expect_bf16_matches_reference(bool trans_b, i64 m, i64 n, i64 k, float alpha = 1.0f, float beta = 0.0f,
                                   Bf16Product product = gemm_bf16) {
  const i64 lda = k + 3, ldb = (trans_b ? k : n) + 2, ldc = n + 5;
  auto rounded = [](const std::vector<float>& x) {
    std::vector<std::uint16_t> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = float_to_bf16(x[i]);
    return out;
  };
  const auto a = rounded(values(m * lda, 0.2f)), b = rounded(values((trans_b ? n : k) * ldb, 0.9f));
  auto got = values(m * ldc, 1.1f);
  if (beta == 0.0f)
    for (i64 i = 0; i < m; ++i)
      for (i64 j = 0; j < n; ++j) got[i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
  const auto before = got;
  product(trans_b, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, got.data(), ldc);
  double worst = 0;
  for (i64 i = 0; i < m; ++i) {
    for (i64 j = 0; j < n; ++j) {
      double sum = 0;
      for (i64 p = 0; p < k; ++p)
        sum += static_cast<double>(bf16_to_float(a[i * lda + p])) *
               static_cast<double>(bf16_to_float(trans_b ? b[j * ldb + p] : b[p * ldb + j]));
      const double want = alpha * sum + (beta == 0.0f ? 0.0 : beta * static_cast<double>(before[i * ldc + j]));
      const double error = std::abs(static_cast<double>(got[i * ldc + j]) - want);
      ASSERT_FALSE(std::isnan(error)) << "m " << m << " n " << n << " k " << k << " at " << i << ", " << j;
      worst = std::max(worst, error);
    }
    for (i64 j = n; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], before[i * ldc + j]) << "wrote past n in row " << i;
  }
  EXPECT_LT(worst, 1e-4 * static_cast<double>(k + 1))
      << "m " << m << " n " << n << " k " << k << " trans_b " << trans_b << " alpha " << alpha << " beta " << beta;
}

TEST(CpuGemmBf16, ProductsMatchTheReferenceForFewRowsAndForManyPanels) {
  for (const bool trans_b : {true, false}) {
    expect_bf16_matches_reference(trans_b, 1, 700, 300);  // a generated token: b read in place
    expect_bf16_matches_reference(trans_b, 8, 130, 64);
    expect_bf16_matches_reference(trans_b, 9, 50, 40);  // just past it: packed (natively, oneDNN's)
    expect_bf16_matches_reference(trans_b, 40, 4200, 600);  // two blocks of columns, three of terms
    expect_bf16_matches_reference(trans_b, 40, 300, 600, 0.5f, 1.0f);  // scaled, added into c
    expect_bf16_matches_reference(trans_b, 3, 300, 600, 0.5f, -2.0f);
    expect_bf16_matches_reference(trans_b, 20, 30, 0, 0.5f, -2.0f);  // no terms: c = beta c
  }
}

// The same products where bf16 is not native (gemm_bf16's path on such a CPU, called directly so
// that it runs here too): b read in place for a few rows, a short inner dimension through our f32
// rank update, widened panels beyond; each scaled and added into c.
TEST(CpuGemmBf16, WidenedProductsMatchTheReference) {
  for (const bool trans_b : {true, false})
    for (const float beta : {0.0f, 1.0f, -2.0f}) {
      expect_bf16_matches_reference(trans_b, 2, 700, 300, 0.5f, beta, gemm_bf16_widened);
      expect_bf16_matches_reference(trans_b, 300, 200, 16, 0.5f, beta, gemm_bf16_widened);
      expect_bf16_matches_reference(trans_b, 40, 130, 7, 0.5f, beta, gemm_bf16_widened);
      expect_bf16_matches_reference(trans_b, 40, 300, 600, 0.5f, beta, gemm_bf16_widened);
    }
}

// A LoRA branch's rank-r products: few columns of c (x Aᵀ, g B), which run through our
// dot-product kernel with AVX512-BF16: every width up to a vector's 16 lanes, row counts around
// the kernel's blocks of 8, odd term counts (the last pair half empty), and threaded. Few rows of
// c (uᵀ x) stay with oneDNN; checked here all the same.
TEST(CpuGemmBf16, NarrowProductsMatchTheReference) {
  for (const bool trans_b : {true, false})
    for (const i64 n : {1, 7, 16})
      for (const i64 m : {1, 7, 8, 37})
        for (const i64 k : {1, 2, 63, 1025}) expect_bf16_matches_reference(trans_b, m, n, k);
  expect_bf16_matches_reference(true, 300, 16, 768);
  expect_bf16_matches_reference(false, 16, 768, 1024);
  for (const bool trans_b : {true, false})
    for (const float beta : {1.0f, -2.0f}) {
      expect_bf16_matches_reference(trans_b, 37, 16, 63, 0.5f, beta);
      expect_bf16_matches_reference(trans_b, 37, 7, 63, 0.5f, beta);
    }
}

// Runs check with two threads and then three, and puts the thread count back.
template <class Check>
void with_two_and_three_threads(const Check& check) {
  const int saved = num_threads();
  for (const int threads : {2, 3}) {
    set_num_threads(threads);
    check();
  }
  set_num_threads(saved);
}

// Products with few rows of c (an adapter's weight gradients, a generated token's layers) share
// their columns out between the threads in blocks of 16: column counts that leave the last block
// short or leave a thread without a block, each beta, with two and three threads.
TEST(CpuGemmBf16, FewRowProductsSharedOutByColumnsMatchTheReference) {
  with_two_and_three_threads([] {
    for (const bool trans_b : {true, false})
      for (const float beta : {0.0f, 1.0f, -2.0f}) {
        expect_bf16_matches_reference(trans_b, 1, 161, 300, 0.5f, beta);
        expect_bf16_matches_reference(trans_b, 16, 200, 1025, 0.5f, beta);
        expect_bf16_matches_reference(trans_b, 32, 129, 40, 0.5f, beta);
      }
  });
}

// Products with many rows and enough columns for each thread (a training step's layers) share
// their columns out in blocks too, several rounds of them where there are many columns: a short
// last block, blocks of 1024 columns at most over few terms and fewer over more, each beta, with
// two and three threads. Past kMostTerms terms (the output layer's input gradient) they share out
// their terms instead, each thread's span in steps summed into an output of its own: one step and
// several, the last span short.
TEST(CpuGemmBf16, WideProductsSharedOutBetweenTheThreadsMatchTheReference) {
  with_two_and_three_threads([] {
    for (const bool trans_b : {true, false})
      for (const float beta : {0.0f, 1.0f, -2.0f}) {
        expect_bf16_matches_reference(trans_b, 40, 2500, 600, 0.5f, beta);  // 4 blocks, the last short
        expect_bf16_matches_reference(trans_b, 33, 4200, 64, 0.5f, beta);   // blocks of 1024 columns
        expect_bf16_matches_reference(trans_b, 70, 257, 1500, 0.5f, beta);  // two threads of three
      }
    for (const bool trans_b : {true, false})
      for (const float beta : {0.0f, -2.0f}) {
        expect_bf16_matches_reference(trans_b, 40, 300, 4097, 0.5f, beta);
        expect_bf16_matches_reference(trans_b, 36, 700, 5000, 0.5f, beta);
      }
  });
}

// A frozen product with a LoRA branch's expansion in one call, c = a op(b) + scale t op(l), against
// a double-precision loop over the same bf16 values: rows shared out between two and three threads
// (the row count leaving the last thread short), a weight past the size whose rows are shared out,
// odd and even ranks, too few rows to share out, and one thread; c starts as NaN and is not read.
void expect_low_rank_matches_reference(bool trans_b, i64 m, i64 n, i64 k, i64 r) {
  const i64 lda = k + 3, ldb = (trans_b ? k : n) + 2, ldt = r + 1, ldl = (trans_b ? r : n) + 4, ldc = n + 5;
  auto rounded = [](const std::vector<float>& x) {
    std::vector<std::uint16_t> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = float_to_bf16(x[i]);
    return out;
  };
  const auto a = rounded(values(m * lda, 0.2f)), b = rounded(values((trans_b ? n : k) * ldb, 0.9f));
  const auto t = rounded(values(m * ldt, 0.4f)), l = rounded(values((trans_b ? n : r) * ldl, 1.7f));
  std::vector<float> got(static_cast<std::size_t>(m * ldc), std::numeric_limits<float>::quiet_NaN());
  for (i64 i = 0; i < m; ++i)
    for (i64 j = n; j < ldc; ++j) got[i * ldc + j] = -7.0f;
  const float scale = 0.75f;
  gemm_bf16_low_rank(trans_b, m, n, k, r, a.data(), lda, b.data(), ldb, scale, t.data(), ldt, l.data(), ldl,
                     got.data(), ldc);
  double worst = 0;
  for (i64 i = 0; i < m; ++i) {
    for (i64 j = 0; j < n; ++j) {
      double frozen = 0, expansion = 0;
      for (i64 p = 0; p < k; ++p)
        frozen += static_cast<double>(bf16_to_float(a[i * lda + p])) *
                  static_cast<double>(bf16_to_float(trans_b ? b[j * ldb + p] : b[p * ldb + j]));
      for (i64 p = 0; p < r; ++p)
        expansion += static_cast<double>(bf16_to_float(t[i * ldt + p])) *
                     static_cast<double>(bf16_to_float(trans_b ? l[j * ldl + p] : l[p * ldl + j]));
      const double error = std::abs(static_cast<double>(got[i * ldc + j]) - (frozen + scale * expansion));
      ASSERT_FALSE(std::isnan(error)) << "m " << m << " n " << n << " k " << k << " r " << r << " at " << i << ", "
                                      << j;
      worst = std::max(worst, error);
    }
    for (i64 j = n; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], -7.0f) << "wrote past n in row " << i;
  }
  EXPECT_LT(worst, 1e-4 * static_cast<double>(k + r))
      << "m " << m << " n " << n << " k " << k << " r " << r << " trans_b " << trans_b;
}

TEST(CpuGemmBf16, ProductsWithALowRankExpansionMatchTheReference) {
  with_two_and_three_threads([] {
    for (const bool trans_b : {true, false}) {
      expect_low_rank_matches_reference(trans_b, 300, 200, 96, 16);   // rows shared out, the last part short
      expect_low_rank_matches_reference(trans_b, 256, 130, 40, 7);    // an odd rank, partial vectors
      expect_low_rank_matches_reference(trans_b, 200, 700, 600, 8);   // a weight past kFusedWeight's size
      expect_low_rank_matches_reference(trans_b, 100, 64, 64, 16);    // too few rows to share out
      expect_low_rank_matches_reference(trans_b, 300, 100, 50, 33);   // past the short kernel's ranks
    }
  });
  const int saved = num_threads();
  set_num_threads(1);
  expect_low_rank_matches_reference(true, 300, 200, 96, 16);
  set_num_threads(saved);
}

// A LoRA branch's expansions t Bᵀ and u A: at most 32 terms, added into c, through our short-inner
// kernel with AVX512-BF16: odd term counts (the last pair half empty), the ranks it unrolls (8
// and 16 terms) and others, column counts around its blocks of 48 and partial vectors, row counts
// around its groups of 16 and blocks of 8, each beta, and threaded.
TEST(CpuGemmBf16, ShortProductsMatchTheReference) {
  for (const bool trans_b : {true, false})
    for (const i64 k : {1, 2, 7, 8, 16, 17, 32})
      for (const i64 n : {17, 48, 64, 65, 200})
        for (const i64 m : {1, 9, 15, 16, 33})
          for (const float beta : {0.0f, 1.0f, -2.0f}) expect_bf16_matches_reference(trans_b, m, n, k, 0.25f, beta);
  expect_bf16_matches_reference(true, 1024, 768, 16, 2.0f, 1.0f);
  expect_bf16_matches_reference(false, 1024, 768, 8, 2.0f, 1.0f);
}

TEST(CpuGemmBf16, ShortKernelTakesOnlyShortProducts) {
  const std::vector<std::uint16_t> a(64 * 64, float_to_bf16(0.5f)), b(a);
  std::vector<float> c(64 * 64, -1.0f);
  EXPECT_FALSE(gemm_bf16_short(true, 64, 64, kShortInner + 1, 1.0f, a.data(), 64, b.data(), 64, 0.0f, c.data(), 64));
  EXPECT_FALSE(gemm_bf16_short(true, 64, 64, 0, 1.0f, a.data(), 64, b.data(), 64, 0.0f, c.data(), 64));
  EXPECT_EQ(c[0], -1.0f);
#if defined(__AVX512BF16__)
  EXPECT_TRUE(gemm_bf16_short(true, 64, 64, 16, 1.0f, a.data(), 64, b.data(), 64, 1.0f, c.data(), 64));
  EXPECT_EQ(c[0], 3.0f);  // -1 + 16 * 0.25
#endif
}

TEST(CpuGemmBf16, NarrowKernelTakesOnlyNarrowProducts) {
  const std::vector<std::uint16_t> a(64 * 64, float_to_bf16(0.5f)), b(a);
  std::vector<float> c(64 * 64, -1.0f);
  EXPECT_FALSE(gemm_bf16_narrow(true, 16, 17, 64, 1.0f, a.data(), 64, b.data(), 64, 0.0f, c.data(), 64));
  EXPECT_FALSE(gemm_bf16_narrow(false, 16, 16, 0, 1.0f, a.data(), 64, b.data(), 64, 0.0f, c.data(), 64));
  EXPECT_EQ(c[0], -1.0f);
#if defined(__AVX512BF16__)
  EXPECT_TRUE(gemm_bf16_narrow(true, 64, 16, 64, 1.0f, a.data(), 64, b.data(), 64, 0.0f, c.data(), 64));
  EXPECT_EQ(c[0], 16.0f);
#endif
}

}  // namespace
}  // namespace loracpp::backend::cpu
