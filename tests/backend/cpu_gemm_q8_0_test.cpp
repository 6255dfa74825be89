// Products against a q8_0 weight against a double-precision reference over the weight's widened
// values: a few rows read in place (one to eight, uneven thread shares), more rows through widened
// slices (x Wᵀ and, for a gradient, g W), beta, and lora_rows over a q8_0 weight.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/threads.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/q8_0.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

using testing::sine_values;

struct Q8Weight {
  std::vector<std::uint8_t> blocks;
  std::vector<float> widened;  // what the blocks stand for
};

Q8Weight q8_weight(i64 rows, i64 cols, float step) {
  const auto w = sine_values(rows * cols, step);
  Q8Weight out{std::vector<std::uint8_t>(dtype_bytes(DType::q8_0, rows * cols)), std::vector<float>(w.size())};
  q8_0::quantize(w.data(), out.blocks.data(), rows * cols);
  q8_0::dequantize(out.blocks.data(), out.widened.data(), rows * cols);
  return out;
}

// c = a op(w) + beta c0 where w is stored [n, k] (trans_b) or [k, n].
void expect_product(bool trans_b, i64 m, i64 n, i64 k, float beta) {
  const auto a = sine_values(m * k, 0.37f);
  const Q8Weight w = trans_b ? q8_weight(n, k, 0.11f) : q8_weight(k, n, 0.11f);
  const auto c0 = sine_values(m * n, 0.05f);
  std::vector<float> c = c0;
  gemm_q8_0(trans_b, m, n, k, a.data(), k, w.blocks.data(), beta, c.data(), n);
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < n; ++j) {
      double want = beta * static_cast<double>(c0[i * n + j]);
      for (i64 p = 0; p < k; ++p) want += static_cast<double>(a[i * k + p]) * w.widened[trans_b ? j * k + p : p * n + j];
      ASSERT_NEAR(c[i * n + j], want, 1e-5 * k) << "m " << m << " n " << n << " k " << k << " at " << i << ", " << j;
    }
}

TEST(CpuGemmQ8_0, FewRowsReadTheBlocksInPlace) {
  const int saved = num_threads();
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (const i64 m : {1, 2, 5, 8}) {
      expect_product(true, m, 37, 96, 0.0f);
      expect_product(true, m, 300, 768, 0.0f);
    }
    expect_product(true, 3, 37, 96, 0.5f);
  }
  set_num_threads(saved);
}

TEST(CpuGemmQ8_0, ManyRowsGoThroughWidenedSlices) {
  for (const i64 m : {9, 40}) {
    expect_product(true, m, 70, 64, 0.0f);
    expect_product(true, m, 2100, 288, 1.0f);  // more rows than one slice holds
  }
  // a gradient times W: w stored [k, n], rows of n values; slices along k, beta only once
  expect_product(false, 1, 64, 70, 0.0f);
  expect_product(false, 9, 96, 6000, 0.5f);
}

TEST(CpuGemmQ8_0, RowsMustHoldWholeBlocks) {
  std::vector<std::uint8_t> blocks(1024);
  std::vector<float> a(40), c(4);
  try {
    gemm_q8_0(true, 1, 4, 40, a.data(), 40, blocks.data(), 0.0f, c.data(), 4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[gemm_q8_0] a q8_0 weight's rows hold whole blocks of 32 values, not 40");
  }
}

TEST(CpuGemmQ8_0, LoraRowsOverAQ8_0Weight) {
  const int saved = num_threads();
  for (const int threads : {2, 3}) {
    set_num_threads(threads);
    for (const i64 rows : {1, 4, 8, 11}) {  // (the op sends at most 8; the kernel takes more in groups)
      const i64 in = 160, out = 45, r = 8;
      const auto x = sine_values(rows * in, 0.31f), a = sine_values(r * in, 0.17f), b = sine_values(out * r, 0.53f);
      const Q8Weight w = q8_weight(out, in, 0.07f);
      std::vector<float> t(static_cast<std::size_t>(rows * r)), y(static_cast<std::size_t>(rows * out));
      lora_rows(x.data(), w.blocks.data(), DType::q8_0, a.data(), b.data(), rows, in, out, r, 1.5f, t.data(), y.data());
      for (i64 row = 0; row < rows; ++row)
        for (i64 j = 0; j < out; ++j) {
          double want = 0;
          for (i64 p = 0; p < in; ++p) want += static_cast<double>(x[row * in + p]) * w.widened[j * in + p];
          for (i64 k = 0; k < r; ++k) {
            double tk = 0;
            for (i64 p = 0; p < in; ++p) tk += static_cast<double>(x[row * in + p]) * a[k * in + p];
            want += 1.5 * tk * b[j * r + k];
          }
          ASSERT_NEAR(y[row * out + j], want, 1e-4 * in) << "row " << row << ", column " << j;
        }
    }
  }
  set_num_threads(saved);
}

}  // namespace
}  // namespace loracpp::backend::cpu
