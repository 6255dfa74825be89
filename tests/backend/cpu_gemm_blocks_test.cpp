// Products against a weight in blocks (q8_0, q4_0) against a double-precision reference over the
// weight's widened values: a few rows read in place (one to eight, uneven thread shares), in f32 or
// quantised to 8 bits, more rows through widened slices (x Wᵀ and, for a gradient, g W), in f32 or
// bf16, beta, and lora_rows over such a weight. Each test runs for both block dtypes.
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_blocks.h"
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

// The values a kernel multiplies in place of rows x (of whole runs of 32) quantised as BlockProducts::q8_rows
// asks: each run of 32 becomes the codes nearest to x 127 / amax (ties to even), times amax / 127.
std::vector<double> q8_quantized(const std::vector<float>& x) {
  std::vector<double> out(x.size());
  for (std::size_t run = 0; run < x.size(); run += 32) {
    float amax = 0;
    for (std::size_t p = run; p < run + 32; ++p) amax = std::max(amax, std::abs(x[p]));
    const float inverse = amax > 0 ? 127.0f / amax : 0.0f, d = amax / 127.0f;
    for (std::size_t p = run; p < run + 32; ++p)
      out[p] = static_cast<double>(std::nearbyint(x[p] * inverse)) * static_cast<double>(d);
  }
  return out;
}

enum class Rounding { none, bf16, q8_rows };

// c = a op(w) + beta c0 where w is stored [n, k] (trans_b) or [k, n], asked for `products`; the
// reference multiplies the values `expected` says the kernel multiplies: both operands rounded to
// bf16 (bf16), or a's rows quantised to 8 bits (q8_rows), else the values as they are.
void expect_product(DType dtype, bool trans_b, i64 m, i64 n, i64 k, float beta, BlockProducts products = {},
                    Rounding expected = Rounding::none) {
  const auto a = sine_values(m * k, 0.37f);
  const BlockWeight w = trans_b ? block_weight(dtype, n, k, 0.11f) : block_weight(dtype, k, n, 0.11f);
  const auto c0 = sine_values(m * n, 0.05f);
  std::vector<float> c = c0;
  gemm_blocks(dtype, products, trans_b, m, n, k, a.data(), k, w.blocks.data(), beta, c.data(), n);
  const std::vector<double> a_q8 = expected == Rounding::q8_rows ? q8_quantized(a) : std::vector<double>();
  const auto a_value = [&](i64 at) {
    if (expected == Rounding::q8_rows) return a_q8[static_cast<std::size_t>(at)];
    return static_cast<double>(expected == Rounding::bf16 ? bf16_rounded(a[at]) : a[at]);
  };
  const auto w_value = [&](float x) { return static_cast<double>(expected == Rounding::bf16 ? bf16_rounded(x) : x); };
  for (i64 i = 0; i < m; ++i)
    for (i64 j = 0; j < n; ++j) {
      double want = beta * static_cast<double>(c0[i * n + j]);
      for (i64 p = 0; p < k; ++p) want += a_value(i * k + p) * w_value(w.widened[trans_b ? j * k + p : p * n + j]);
      ASSERT_NEAR(c[i * n + j], want, 1e-5 * k) << "m " << m << " n " << n << " k " << k << " at " << i << ", " << j;
    }
}

// Whether m rows times a [64, 96] weight asked for `products` differ from the f32 products at all.
bool differs_from_f32(DType dtype, BlockProducts products, i64 m) {
  const i64 n = 64, k = 96;
  const auto a = sine_values(m * k, 0.37f);
  const BlockWeight w = block_weight(dtype, n, k, 0.11f);
  std::vector<float> wide(static_cast<std::size_t>(m * n)), narrow(wide.size());
  gemm_blocks(dtype, {}, true, m, n, k, a.data(), k, w.blocks.data(), 0.0f, wide.data(), n);
  gemm_blocks(dtype, products, true, m, n, k, a.data(), k, w.blocks.data(), 0.0f, narrow.data(), n);
  return wide != narrow;
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
    const Rounding expected = native ? Rounding::bf16 : Rounding::none;
    expect_product(GetParam(), trans_b, 40, 2112, 288, 0.5f, {.bf16 = true}, expected);
    expect_product(GetParam(), trans_b, 20, 96, 6016, 1.0f, {.bf16 = true}, expected);  // more than one slice either way
  }
  expect_product(GetParam(), true, 3, 300, 768, 0.0f, {.bf16 = true});  // in place: f32
  EXPECT_EQ(differs_from_f32(GetParam(), {.bf16 = true}, 24), native);
}

// Asked for q8_rows, a few rows read in place are quantised to 8 bits per run of 32 values where the
// CPU has 8-bit dot products (and differ from the f32 products there), for any thread count and
// beta; elsewhere, and for more rows than the in-place path takes, the request is the f32 product.
TEST_P(CpuGemmBlocks, Q8RowsQuantiseAFewRowsWhereNative) {
  const bool native = q8_rows_native();
  const Rounding expected = native ? Rounding::q8_rows : Rounding::none;
  const int saved = num_threads();
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (const i64 m : {1, 2, 5, 8}) {
      expect_product(GetParam(), true, m, 37, 96, 0.0f, {.q8_rows = true}, expected);
      expect_product(GetParam(), true, m, 300, 768, 0.0f, {.q8_rows = true}, expected);
    }
    expect_product(GetParam(), true, 3, 37, 96, 0.5f, {.q8_rows = true}, expected);
  }
  set_num_threads(saved);
  expect_product(GetParam(), true, 9, 70, 64, 0.0f, {.q8_rows = true});    // through slices: f32
  expect_product(GetParam(), false, 1, 64, 70, 0.0f, {.q8_rows = true});   // a gradient's product: f32
  EXPECT_EQ(differs_from_f32(GetParam(), {.q8_rows = true}, 1), native);
}

TEST_P(CpuGemmBlocks, RowsMustHoldWholeBlocks) {
  std::vector<std::uint8_t> blocks(1024);
  std::vector<float> a(40), c(4);
  try {
    gemm_blocks(GetParam(), {}, true, 1, 4, 40, a.data(), 40, blocks.data(), 0.0f, c.data(), 4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), fmt::format("[gemm_blocks] a {} weight's rows hold whole blocks of 32 values, not 40",
                                                 dtype_name(GetParam())));
  }
}

TEST(CpuGemmBlocksErrors, AWeightWithoutBlocksIsRefused) {
  std::vector<float> w(64), a(32), c(2);
  try {
    gemm_blocks(DType::bf16, {}, true, 1, 2, 32, a.data(), 32, w.data(), 0.0f, c.data(), 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[gemm_blocks] the weight must be stored in blocks (q8_0, q4_0), not bf16");
  }
}

// lora_rows over a block weight, in f32 or asked for q8_rows: the frozen product multiplies the
// rows quantised to 8 bits where the CPU has 8-bit dot products; the adapter's products stay f32.
// The shapes give a single row's path (t shared out between threads, each output's adapter term
// added to its dot product) shares of W's rows short and long against the rows that fetch A, a
// rank with a tail of fewer than 8 values, and a rank below the thread count.
TEST_P(CpuGemmBlocks, LoraRowsOverABlockWeight) {
  const int saved = num_threads();
  for (const bool q8_rows : {false, true}) {
    for (const int threads : {2, 3}) {
      set_num_threads(threads);
      for (const auto& [rows, out, r] : {std::tuple<i64, i64, i64>{1, 45, 8}, {4, 45, 8}, {8, 45, 8}, {11, 45, 8},
                                         {1, 600, 13}, {2, 600, 13}, {1, 300, 2}}) {
        // (the op sends at most 8 rows; the kernel takes more in groups)
        const i64 in = 160;
        const auto x = sine_values(rows * in, 0.31f), a = sine_values(r * in, 0.17f), b = sine_values(out * r, 0.53f);
        const BlockWeight w = block_weight(GetParam(), out, in, 0.07f);
        std::vector<float> t(static_cast<std::size_t>(rows * r)), y(static_cast<std::size_t>(rows * out));
        lora_rows(x.data(), w.blocks.data(), GetParam(), {.q8_rows = q8_rows}, a.data(), b.data(), rows, in, out, r,
                  1.5f, t.data(), y.data());
        const bool quantized = q8_rows && q8_rows_native();
        const std::vector<double> xq = quantized ? q8_quantized(x) : std::vector<double>(x.begin(), x.end());
        for (i64 row = 0; row < rows; ++row)
          for (i64 j = 0; j < out; ++j) {
            double want = 0;
            for (i64 p = 0; p < in; ++p) want += xq[row * in + p] * w.widened[j * in + p];
            for (i64 k = 0; k < r; ++k) {
              double tk = 0;
              for (i64 p = 0; p < in; ++p) tk += static_cast<double>(x[row * in + p]) * a[k * in + p];
              want += 1.5 * tk * b[j * r + k];
              if (j == 0) {
                ASSERT_NEAR(t[row * r + k], tk, 1e-5 * in) << "row " << row << ", t " << k;
              }
            }
            ASSERT_NEAR(y[row * out + j], want, 1e-4 * in)
                << "row " << row << ", column " << j << " of " << out << ", r " << r << ", q8 " << q8_rows;
          }
      }
    }
  }
  set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(BlockDTypes, CpuGemmBlocks, ::testing::Values(DType::q8_0, DType::q4_0),
                         [](const auto& param_info) { return std::string(dtype_name(param_info.param)); });

}  // namespace
}  // namespace loracpp::backend::cpu
