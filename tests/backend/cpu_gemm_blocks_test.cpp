// Products against a weight in blocks (q8_0, q4_0) against a double-precision reference over the
// weight's widened values: a few rows read in place (one to eight, uneven thread shares), more rows
// through widened slices (x Wᵀ and, for a gradient, g W), beta, and lora_rows over such a weight.
// Each test runs for both block dtypes.
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/threads.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/blocks.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

using testing::sine_values;

struct BlockWeight {
  std::vector<std::uint8_t> blocks;
  std::vector<float> widened;  // what the blocks stand for
};

BlockWeight block_weight(DType dtype, i64 rows, i64 cols, float step) {
  const auto w = sine_values(rows * cols, step);
  BlockWeight out{std::vector<std::uint8_t>(dtype_bytes(dtype, rows * cols)), std::vector<float>(w.size())};
  quantize_blocks(dtype, w.data(), out.blocks.data(), rows * cols);
  dequantize_blocks(dtype, out.blocks.data(), out.widened.data(), rows * cols);
  return out;
}

class CpuGemmBlocks : public ::testing::TestWithParam<DType> {};

float bf16_rounded(float x) { return bf16_to_float(float_to_bf16(x)); }

// c = a op(w) + beta c0 where w is stored [n, k] (trans_b) or [k, n]. in_bf16: the product the
// kernel makes when asked for bf16 products on a CPU that has them, both operands rounded to bf16.
void expect_product(DType dtype, bool trans_b, i64 m, i64 n, i64 k, float beta, bool in_bf16 = false) {
  const auto a = sine_values(m * k, 0.37f);
  const BlockWeight w = trans_b ? block_weight(dtype, n, k, 0.11f) : block_weight(dtype, k, n, 0.11f);
  const auto c0 = sine_values(m * n, 0.05f);
  std::vector<float> c = c0;
  gemm_blocks(dtype, in_bf16, trans_b, m, n, k, a.data(), k, w.blocks.data(), beta, c.data(), n);
  const auto value = [in_bf16](float x) { return static_cast<double>(in_bf16 ? bf16_rounded(x) : x); };
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < n; ++j) {
      double want = beta * static_cast<double>(c0[i * n + j]);
      for (i64 p = 0; p < k; ++p) want += value(a[i * k + p]) * value(w.widened[trans_b ? j * k + p : p * n + j]);
      ASSERT_NEAR(c[i * n + j], want, 1e-5 * k) << "m " << m << " n " << n << " k " << k << " at " << i << ", " << j;
    }
}

TEST_P(CpuGemmBlocks, FewRowsReadTheBlocksInPlace) {
  const int saved = num_threads();
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (const i64 m : {1, 2, 5, 8}) {
      expect_product(GetParam(), true, m, 37, 96, 0.0f);
      expect_product(GetParam(), true, m, 300, 768, 0.0f);
    }
    expect_product(GetParam(), true, 3, 37, 96, 0.5f);
  }
  set_num_threads(saved);
}

TEST_P(CpuGemmBlocks, ManyRowsGoThroughWidenedSlices) {
  for (const i64 m : {9, 40}) {
    expect_product(GetParam(), true, m, 70, 64, 0.0f);
    expect_product(GetParam(), true, m, 2100, 288, 1.0f);  // more rows than one slice holds
  }
  // a gradient times W: w stored [k, n], rows of n values; slices along k, beta only once
  expect_product(GetParam(), false, 1, 64, 70, 0.0f);
  expect_product(GetParam(), false, 9, 96, 6000, 0.5f);
}

// Asked for bf16 products, more rows than the in-place path takes multiply both operands rounded to
// bf16 where the CPU has native bf16 products (and differ from the f32 products there); elsewhere
// the request is the f32 product. A few rows read the blocks in place in f32 either way.
TEST_P(CpuGemmBlocks, Bf16ProductsRoundBothOperandsWhereNative) {
  const bool native = bf16_products_native();
  for (const bool trans_b : {true, false}) {
    expect_product(GetParam(), trans_b, 40, 2112, 288, 0.5f, native);
    expect_product(GetParam(), trans_b, 20, 96, 6016, 1.0f, native);  // more than one slice either way
  }
  expect_product(GetParam(), true, 3, 300, 768, 0.0f, false);  // in place: f32
  const i64 m = 24, n = 64, k = 96;
  const auto a = sine_values(m * k, 0.37f);
  const BlockWeight w = block_weight(GetParam(), n, k, 0.11f);
  std::vector<float> wide(static_cast<std::size_t>(m * n)), narrow(wide.size());
  gemm_blocks(GetParam(), false, true, m, n, k, a.data(), k, w.blocks.data(), 0.0f, wide.data(), n);
  gemm_blocks(GetParam(), true, true, m, n, k, a.data(), k, w.blocks.data(), 0.0f, narrow.data(), n);
  EXPECT_EQ(wide != narrow, native);
}

TEST_P(CpuGemmBlocks, RowsMustHoldWholeBlocks) {
  std::vector<std::uint8_t> blocks(1024);
  std::vector<float> a(40), c(4);
  try {
    gemm_blocks(GetParam(), false, true, 1, 4, 40, a.data(), 40, blocks.data(), 0.0f, c.data(), 4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), fmt::format("[gemm_blocks] a {} weight's rows hold whole blocks of 32 values, not 40",
                                                 dtype_name(GetParam())));
  }
}

TEST(CpuGemmBlocksErrors, AWeightWithoutBlocksIsRefused) {
  std::vector<float> w(64), a(32), c(2);
  try {
    gemm_blocks(DType::bf16, false, true, 1, 2, 32, a.data(), 32, w.data(), 0.0f, c.data(), 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[gemm_blocks] the weight must be stored in blocks (q8_0, q4_0), not bf16");
  }
}

TEST_P(CpuGemmBlocks, LoraRowsOverABlockWeight) {
  const int saved = num_threads();
  for (const int threads : {2, 3}) {
    set_num_threads(threads);
    for (const i64 rows : {1, 4, 8, 11}) {  // (the op sends at most 8; the kernel takes more in groups)
      const i64 in = 160, out = 45, r = 8;
      const auto x = sine_values(rows * in, 0.31f), a = sine_values(r * in, 0.17f), b = sine_values(out * r, 0.53f);
      const BlockWeight w = block_weight(GetParam(), out, in, 0.07f);
      std::vector<float> t(static_cast<std::size_t>(rows * r)), y(static_cast<std::size_t>(rows * out));
      lora_rows(x.data(), w.blocks.data(), GetParam(), a.data(), b.data(), rows, in, out, r, 1.5f, t.data(), y.data());
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

INSTANTIATE_TEST_SUITE_P(BlockDTypes, CpuGemmBlocks, ::testing::Values(DType::q8_0, DType::q4_0),
                         [](const auto& param_info) { return std::string(dtype_name(param_info.param)); });

}  // namespace
}  // namespace loracpp::backend::cpu
