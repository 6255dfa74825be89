// The packed kernel against a double-precision loop: f32 and bf16 operands, each read as it lies
// or transposed, every kind of beta, on one thread and on the team, with shapes that end inside a
// register tile, cross blocks of rows, of columns and of terms, and have no terms at all.
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/gemm_packed.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

struct Operand {
  std::vector<float> f32;  // the values (bf16-exact when held as bf16)
  std::vector<std::uint16_t> bf16;
  DType dtype;
  i64 ld;
  bool trans;

  Operand(i64 rows, i64 cols, DType type, bool transposed, float phase) : dtype(type), ld(cols + 3), trans(transposed) {
    f32.resize(static_cast<std::size_t>(rows * ld));
    for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = std::sin(phase + 0.37f * static_cast<float>(i));
    if (dtype == DType::bf16) {
      bf16.resize(f32.size());
      for (std::size_t i = 0; i < f32.size(); ++i) {
        bf16[i] = float_to_bf16(f32[i]);
        f32[i] = bf16_to_float(bf16[i]);
      }
    }
  }
  // op(x)(i, p): x is [rows, cols] as stored, read transposed when `trans`.
  double at(i64 i, i64 p) const { return f32[static_cast<std::size_t>(trans ? p * ld + i : i * ld + p)]; }
  PackedOperand view() const {
    return {dtype == DType::bf16 ? static_cast<const void*>(bf16.data()) : f32.data(), dtype, ld, trans};
  }
};

void expect_matches_reference(i64 m, i64 n, i64 k, DType a_type, bool trans_a, DType b_type, bool trans_b, float alpha,
                              float beta, bool parallel) {
  const Operand a(trans_a ? k : m, trans_a ? m : k, a_type, trans_a, 0.3f);
  const Operand b(trans_b ? n : k, trans_b ? k : n, b_type, trans_b, 1.7f);
  const i64 ldc = n + 5;
  std::vector<float> c(static_cast<std::size_t>(m * ldc));
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = std::cos(0.11f * static_cast<float>(i));
  if (beta == 0.0f) {  // beta 0 overwrites what was there, non-finite values included
    c[0] = std::numeric_limits<float>::quiet_NaN();
    c.back() = std::numeric_limits<float>::infinity();
  }
  const auto before = c;
  packed_gemm(m, n, k, alpha, a.view(), b.view(), beta, c.data(), ldc, parallel);
  const auto where = [&] {
    return ::testing::Message() << "m " << m << " n " << n << " k " << k << " a " << dtype_name(a_type) << (trans_a ? "ᵀ" : "")
                                << " b " << dtype_name(b_type) << (trans_b ? "ᵀ" : "") << " alpha " << alpha << " beta "
                                << beta << (parallel ? " team" : " one thread");
  };
  double worst = 0;
  for (i64 i = 0; i < m; ++i) {
    for (i64 j = 0; j < n; ++j) {
      double sum = 0;
      for (i64 p = 0; p < k; ++p) sum += a.at(i, p) * b.at(p, j);
      const double old = before[static_cast<std::size_t>(i * ldc + j)];
      const double want = alpha * sum + (beta == 0.0f ? 0.0 : beta * old);
      worst = std::max(worst, std::abs(c[static_cast<std::size_t>(i * ldc + j)] - want));
    }
    for (i64 j = n; j < ldc; ++j)
      ASSERT_EQ(c[static_cast<std::size_t>(i * ldc + j)], before[static_cast<std::size_t>(i * ldc + j)])
          << where() << ": wrote past n in row " << i;
  }
  EXPECT_LT(worst, 1e-5 * static_cast<double>(k + 1)) << where();
}

TEST(CpuGemmPacked, MatchesTheReferenceForEveryLayoutDtypeAndBeta) {
  for (const DType type : {DType::f32, DType::bf16})
    for (const bool trans_a : {false, true})
      for (const bool trans_b : {false, true})
        for (const float beta : {0.0f, 1.0f, 0.5f}) {
          expect_matches_reference(13, 37, 29, type, trans_a, type, trans_b, 1.0f, beta, false);   // inside tiles
          expect_matches_reference(150, 70, 300, type, trans_a, type, trans_b, 0.75f, beta, true);  // two blocks of rows and of terms
        }
}

TEST(CpuGemmPacked, MixesDtypesAndCrossesEveryBlockEdge) {
  // f32 a with bf16 b and the reverse; rows in three uneven blocks, columns in two blocks of 4096,
  // terms in three blocks of 256, each ending part-way through a tile.
  expect_matches_reference(7, 4100, 520, DType::f32, false, DType::bf16, true, 1.0f, 0.0f, true);
  expect_matches_reference(301, 45, 513, DType::bf16, true, DType::f32, false, 2.0f, 1.0f, true);
  expect_matches_reference(301, 45, 513, DType::bf16, true, DType::f32, false, 2.0f, 1.0f, false);
  // Whole tiles only: 12 rows, 32 columns (two AVX2 tiles or one AVX-512 tile), 256 terms.
  expect_matches_reference(12, 32, 256, DType::f32, false, DType::f32, true, 1.0f, 0.0f, true);
  // One row and one column.
  expect_matches_reference(1, 1, 5, DType::f32, false, DType::f32, false, 1.0f, 0.0f, true);
}

TEST(CpuGemmPacked, NoTermsScalesCByBeta) {
  expect_matches_reference(5, 9, 0, DType::f32, false, DType::f32, false, 1.0f, 0.0f, true);
  expect_matches_reference(5, 9, 0, DType::bf16, true, DType::bf16, true, 1.0f, 0.5f, false);
}

}  // namespace
}  // namespace loracpp::backend::cpu
