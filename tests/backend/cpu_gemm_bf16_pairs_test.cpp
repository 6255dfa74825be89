// Products over packed pairs of bf16 terms (the fused attention's tiles): the packers lay each
// pair where the kernel reads it, and the kernel's sums match a double-precision reference for
// row and column counts around its blocks (6 rows, 64-column panels, 16-column vectors), odd term
// counts, an operand read transposed, each beta, and the causal triangles, which may skip only
// what they say is zero or unwanted.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "backend/cpu/gemm_bf16_pairs.h"
#include "core/dtype.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

// bf16 values of a smooth pattern, with a zero every seventh (the odd partner of a pair may be).
std::vector<std::uint16_t> bf16_values(i64 count, float phase) {
  std::vector<std::uint16_t> out(static_cast<std::size_t>(count));
  for (i64 i = 0; i < count; ++i)
    out[static_cast<std::size_t>(i)] = i % 7 == 3 ? 0 : float_to_bf16(std::sin(0.37f * static_cast<float>(i) + phase));
  return out;
}

double at(const std::vector<std::uint16_t>& x, i64 i) { return bf16_to_float(x[static_cast<std::size_t>(i)]); }

TEST(CpuGemmBf16Pairs, PackersLayEachPairWhereTheKernelReadsIt) {
  const i64 rows = 5, cols = 70, ldx = 72;  // an odd row and column count, two panels, rows apart
  const auto x = bf16_values(rows * ldx, 0.1f);
  const auto word = [&](i64 r, i64 c) -> std::uint32_t {  // x[r, c], zero past x
    return r < rows && c < cols ? x[static_cast<std::size_t>(r * ldx + c)] : 0u;
  };
  // Down the rows: height 3, pair q of column c in panel c / 64.
  std::vector<std::uint32_t> down(static_cast<std::size_t>(packed_size(3, cols)), 0xdeadbeef);
  pack_row_pairs(x.data(), ldx, rows, cols, down.data());
  for (i64 c = 0; c < 128; ++c)
    for (i64 q = 0; q < 3; ++q)
      ASSERT_EQ(down[static_cast<std::size_t>((c / kPanel * 3 + q) * kPanel + c % kPanel)],
                word(2 * q, c) | word(2 * q + 1, c) << 16)
          << "row pair " << q << " column " << c;
  // Along the rows (x transposed): height 35, pair p of column r in panel 0.
  std::vector<std::uint32_t> along(static_cast<std::size_t>(packed_size(35, rows)), 0xdeadbeef);
  pack_column_pairs(x.data(), ldx, rows, cols, along.data());
  for (i64 r = 0; r < kPanel; ++r)
    for (i64 p = 0; p < 35; ++p)
      ASSERT_EQ(along[static_cast<std::size_t>(p * kPanel + r)], word(r, 2 * p) | word(r, 2 * p + 1) << 16)
          << "pair " << p << " row " << r;
  // Down the rows, unpadded, as a left operand read transposed.
  std::vector<std::uint32_t> left(static_cast<std::size_t>(3 * cols), 0xdeadbeef);
  pack_rows_down(x.data(), ldx, rows, cols, left.data());
  for (i64 q = 0; q < 3; ++q)
    for (i64 c = 0; c < cols; ++c)
      ASSERT_EQ(left[static_cast<std::size_t>(q * cols + c)], word(2 * q, c) | word(2 * q + 1, c) << 16);
}

// c [m, n] = alpha a [m, k] b [k, n] + beta c against a double reference, with a given as rows (k
// even) or as the transpose of [k, m] rows packed down, and b packed from [k, n] rows or from
// [n, k] rows (transposed). Where a triangle is given, a's terms it calls zero are zero, and only
// the entries it wants are checked.
void expect_pairs_match_reference(i64 m, i64 n, i64 k, float alpha, float beta, bool a_transposed, bool b_transposed,
                                  Triangle triangle = {}) {
  const i64 pairs = (k + 1) / 2, k_even = 2 * pairs;
  auto a = bf16_values(m * k, 0.2f);        // a[i, t]
  const auto b = bf16_values(k * n, 0.9f);  // b[t, j]
  const i64 d = triangle.diagonal;
  for (i64 i = 0; i < m; ++i)
    for (i64 t = 0; t < k; ++t)
      if ((triangle.kind == Triangle::terms_to_diagonal && t > i + d) ||
          (triangle.kind == Triangle::terms_from_diagonal && t < i - d))
        a[static_cast<std::size_t>(i * k + t)] = 0;
  // The operands as the kernel reads them.
  std::vector<std::uint16_t> a_rows(static_cast<std::size_t>(m * k_even), 0),
      a_columns(static_cast<std::size_t>(k * m));
  for (i64 i = 0; i < m; ++i)
    for (i64 t = 0; t < k; ++t) {
      a_rows[static_cast<std::size_t>(i * k_even + t)] = a[static_cast<std::size_t>(i * k + t)];
      a_columns[static_cast<std::size_t>(t * m + i)] = a[static_cast<std::size_t>(i * k + t)];
    }
  std::vector<std::uint32_t> a_down(static_cast<std::size_t>(pairs * m));
  PairsOperand left = bf16_rows_as_pairs(a_rows.data(), k_even);
  if (a_transposed) {
    pack_rows_down(a_columns.data(), m, k, m, a_down.data());
    left = {a_down.data(), 1, m};
  }
  std::vector<std::uint16_t> b_t(static_cast<std::size_t>(n * k));
  for (i64 t = 0; t < k; ++t)
    for (i64 j = 0; j < n; ++j) b_t[static_cast<std::size_t>(j * k + t)] = b[static_cast<std::size_t>(t * n + j)];
  std::vector<std::uint32_t> packed(static_cast<std::size_t>(packed_size(pairs, n)));
  if (b_transposed) {
    pack_column_pairs(b_t.data(), k, n, k, packed.data());
  } else {
    pack_row_pairs(b.data(), n, k, n, packed.data());
  }
  const i64 ldc = n + 3;
  std::vector<float> c(static_cast<std::size_t>(m * ldc));
  for (std::size_t i = 0; i < c.size(); ++i)  // beta 0 overwrites NaN; the columns between rows hold -7
    c[i] = static_cast<i64>(i) % ldc >= n ? -7.0f : (beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : 0.5f);
  const std::vector<float> before = c;
  gemm_bf16_pairs(m, n, pairs, alpha, left, packed.data(), pairs, beta, c.data(), ldc, triangle);
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < n; ++j) {
      if (triangle.kind == Triangle::columns_to_diagonal && j > i + d) continue;  // not wanted
      double want = 0, size = 0;
      for (i64 t = 0; t < k; ++t) {
        want += at(a, i * k + t) * at(b, t * n + j);
        size += std::abs(at(a, i * k + t) * at(b, t * n + j));
      }
      const auto e = static_cast<std::size_t>(i * ldc + j);
      want = alpha * want + (beta == 0.0f ? 0.0 : beta * before[e]);
      ASSERT_NEAR(c[e], want, 1e-5 * (std::abs(alpha) * size + 1))
          << "m " << m << " n " << n << " k " << k << " at [" << i << ", " << j << "] triangle " << triangle.kind;
    }
  for (i64 i = 0; i < m; ++i)  // the columns between rows untouched
    for (i64 j = n; j < ldc; ++j)
      ASSERT_EQ(c[static_cast<std::size_t>(i * ldc + j)], before[static_cast<std::size_t>(i * ldc + j)]);
}

TEST(CpuGemmBf16Pairs, ProductsMatchTheReference) {
  for (const i64 m : {1, 5, 6, 13, 130})
    for (const i64 n : {1, 16, 17, 64, 65, 200})
      for (const i64 k : {1, 2, 31, 64, 130}) {
        expect_pairs_match_reference(m, n, k, 0.5f, 0.0f, false, m % 2 == 1);
        expect_pairs_match_reference(m, n, k, -1.0f, 1.0f, true, n % 2 == 0);
      }
  expect_pairs_match_reference(128, 512, 64, 0.125f, 0.0f, false, true);  // a 64-value head's scores
  expect_pairs_match_reference(512, 64, 128, 1.0f, 1.0f, true, false);    // its values' gradient
}

TEST(CpuGemmBf16Pairs, TrianglesSkipOnlyWhatTheySayIsZeroOrUnwanted) {
  for (const i64 d : {-7, 0, 10, 300}) {
    for (const i64 m : {13, 128}) {
      expect_pairs_match_reference(m, 200, 64, 0.5f, 0.0f, false, true, {Triangle::columns_to_diagonal, d});
      expect_pairs_match_reference(m, 64, 201, 1.0f, 0.0f, false, false, {Triangle::terms_to_diagonal, d});
      expect_pairs_match_reference(201, 48, m, 1.0f, 1.0f, true, false, {Triangle::terms_from_diagonal, d});
    }
  }
}

}  // namespace
}  // namespace loracpp::backend::cpu
