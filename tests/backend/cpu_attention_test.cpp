// The CPU's fused attention reads key and value heads that lie apart (a KV cache's slice, each
// head's rows followed by room for more) exactly as it reads packed ones: the same output,
// log-sum-exp and gradients, bit for bit, with f32 and with bf16 tile products, grouped-query,
// for one generated query and for a prompt's worth. The room between heads holds NaNs, which a
// wrong stride would read. Keys and values held in bf16 (a KV cache on the bf16 path) give what
// their widened values give.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "core/dtype.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

std::vector<float> values(std::size_t n, float step) {
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = std::sin(step * static_cast<float>(i) + 0.3f);
  return out;
}

// heads [count, rows, dim] laid `capacity` rows apart, the rows past `rows` NaN.
std::vector<float> spaced(const std::vector<float>& packed, i64 count, i64 rows, i64 capacity, i64 dim) {
  std::vector<float> out(static_cast<std::size_t>(count * capacity * dim), std::numeric_limits<float>::quiet_NaN());
  for (i64 h = 0; h < count; ++h)
    for (i64 i = 0; i < rows * dim; ++i)
      out[static_cast<std::size_t>(h * capacity * dim + i)] = packed[static_cast<std::size_t>(h * rows * dim + i)];
  return out;
}

void expect_spaced_heads_read_as_packed(i64 q_len, bool bf16) {
  const i64 batch = 2, kv_heads = 2, group = 2, kv_len = 90, capacity = 128, dim = 32;
  AttentionGeometry packed{batch, kv_heads, group, q_len, kv_len, dim, dim, 1.0f / std::sqrt(32.0f), true, 0, 0, bf16};
  AttentionGeometry apart = packed;
  apart.k_head_stride = apart.v_head_stride = capacity * dim;
  const i64 kv_items = batch * kv_heads, q_rows = batch * kv_heads * group * q_len;
  const auto q = values(static_cast<std::size_t>(q_rows * dim), 0.37f);
  const auto k = values(static_cast<std::size_t>(kv_items * kv_len * dim), 0.11f);
  const auto v = values(static_cast<std::size_t>(kv_items * kv_len * dim), 0.23f);
  const auto dout = values(static_cast<std::size_t>(q_rows * dim), 0.05f);
  const auto k_apart = spaced(k, kv_items, kv_len, capacity, dim), v_apart = spaced(v, kv_items, kv_len, capacity, dim);

  struct Result {
    std::vector<float> out, lse, dq, dk, dv;
  };
  auto run = [&](const float* keys, const float* vals, const AttentionGeometry& g) {
    Result r{std::vector<float>(q.size()), std::vector<float>(static_cast<std::size_t>(q_rows)),
             std::vector<float>(q.size()), std::vector<float>(k.size()), std::vector<float>(v.size())};
    attention_forward(q.data(), keys, vals, nullptr, r.out.data(), r.lse.data(), g);
    attention_backward(q.data(), keys, vals, nullptr, r.out.data(), r.lse.data(), dout.data(), r.dq.data(),
                       r.dk.data(), r.dv.data(), g);
    return r;
  };
  const Result want = run(k.data(), v.data(), packed), got = run(k_apart.data(), v_apart.data(), apart);
  EXPECT_EQ(got.out, want.out) << "q_len " << q_len << " bf16 " << bf16;
  EXPECT_EQ(got.lse, want.lse) << "q_len " << q_len << " bf16 " << bf16;
  EXPECT_EQ(got.dq, want.dq) << "q_len " << q_len << " bf16 " << bf16;
  EXPECT_EQ(got.dk, want.dk) << "q_len " << q_len << " bf16 " << bf16;
  EXPECT_EQ(got.dv, want.dv) << "q_len " << q_len << " bf16 " << bf16;
  for (float x : got.out) ASSERT_TRUE(std::isfinite(x)) << "read past a head's rows";
}

TEST(CpuAttention, HeadsLaidApartAreReadAsPackedOnes) {
  for (const bool bf16 : {false, true})
    for (const i64 q_len : {1, 70}) expect_spaced_heads_read_as_packed(q_len, bf16);
}

// Keys and values in bf16, laid apart as in a cache, read in place: the output and log-sum-exp of
// the f32 kernel over the same values widened. With bf16 tiles both round nothing (the values are
// bf16 already): bit for bit. With f32 tiles (a generated token) the widened dot products sum in
// another order than BLAS: within f32 rounding. Heads of 20 and 136 values leave tails after whole
// vectors, and 136 takes more vectors than a generated token's product holds at once.
void expect_bf16_kv_as_widened(i64 q_len, bool bf16, std::int64_t group, i64 dim) {
  const i64 batch = 2, kv_heads = 2, kv_len = 90, capacity = 128;
  AttentionGeometry g{batch, kv_heads, group, q_len, kv_len, dim, dim, 1.0f / std::sqrt(32.0f), true, 0, 0, bf16};
  const i64 kv_items = batch * kv_heads, q_rows = batch * kv_heads * group * q_len;
  const auto q = values(static_cast<std::size_t>(q_rows * dim), 0.37f);
  auto rounded = [](std::vector<float> x) {
    for (float& e : x) e = bf16_to_float(float_to_bf16(e));
    return x;
  };
  const auto k = rounded(values(static_cast<std::size_t>(kv_items * kv_len * dim), 0.11f));
  const auto v = rounded(values(static_cast<std::size_t>(kv_items * kv_len * dim), 0.23f));
  auto as_bf16 = [](const std::vector<float>& x) {
    std::vector<std::uint16_t> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = float_to_bf16(x[i]);  // NaN stays NaN
    return out;
  };
  const auto k16 = as_bf16(spaced(k, kv_items, kv_len, capacity, dim));
  const auto v16 = as_bf16(spaced(v, kv_items, kv_len, capacity, dim));
  std::vector<float> want(q.size()), want_lse(static_cast<std::size_t>(q_rows));
  attention_forward(q.data(), k.data(), v.data(), nullptr, want.data(), want_lse.data(), g);
  AttentionGeometry apart = g;
  apart.k_head_stride = apart.v_head_stride = capacity * dim;
  std::vector<float> got(q.size()), got_lse(want_lse.size());
  attention_forward_bf16_kv(q.data(), k16.data(), v16.data(), nullptr, got.data(), got_lse.data(), apart);
  const bool exact = bf16 && q_len >= 64 && bf16_products_native();
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "read past a head's rows";
    if (exact) ASSERT_EQ(got[i], want[i]) << i << " q_len " << q_len;
    else ASSERT_NEAR(got[i], want[i], 2e-6f) << i << " q_len " << q_len << " bf16 " << bf16 << " dim " << dim;
  }
  for (std::size_t i = 0; i < want_lse.size(); ++i) ASSERT_NEAR(got_lse[i], want_lse[i], 2e-6f * std::abs(want_lse[i]));
}

TEST(CpuAttention, Bf16KeysAndValuesReadInPlaceGiveTheirWidenedValuesResult) {
  for (const bool bf16 : {false, true})
    for (const i64 q_len : {1, 5, 70})
      for (const std::int64_t group : {1, 3})
        for (const i64 dim : {32, 20, 136}) expect_bf16_kv_as_widened(q_len, bf16, group, dim);
}

// Attention over more query rows than a tile holds (three tiles, the last short), grouped-query and
// causal with earlier keys, against a direct double-precision computation of the output and the
// q, k, v gradients. bf16 tile products round q, k, v, the probabilities and their gradients to
// bf16, so they are held to a bf16-sized tolerance. Odd lengths (a short tile of odd rows, an odd
// number of keys) and a head of 20 values leave pairs of terms half empty and vectors partial in
// the bf16 kernel's packed operands; a head of 17 values (odd: no whole pairs) takes the bf16
// tiles through the library's products instead.
void expect_tiles_match_direct_attention(bool bf16, i64 q_len, i64 kv_len, i64 dim) {
  const i64 kv_heads = 2, group = 2;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const AttentionGeometry g{1, kv_heads, group, q_len, kv_len, dim, dim, scale, true, 0, 0, bf16};
  const i64 q_rows = kv_heads * group * q_len;
  const auto q = values(static_cast<std::size_t>(q_rows * dim), 0.37f);
  const auto k = values(static_cast<std::size_t>(kv_heads * kv_len * dim), 0.11f);
  const auto v = values(static_cast<std::size_t>(kv_heads * kv_len * dim), 0.23f);
  const auto dout = values(static_cast<std::size_t>(q_rows * dim), 0.05f);
  std::vector<float> out(q.size()), lse(static_cast<std::size_t>(q_rows)), dq(q.size()), dk(k.size()), dv(v.size());
  attention_forward(q.data(), k.data(), v.data(), nullptr, out.data(), lse.data(), g);
  attention_backward(q.data(), k.data(), v.data(), nullptr, out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                     dv.data(), g);

  std::vector<double> want_out(q.size()), want_dq(q.size()), want_dk(k.size()), want_dv(v.size());
  for (i64 head = 0; head < kv_heads * group; ++head) {
    const i64 kvh = head / group;
    auto at = [dim](const std::vector<float>& x, i64 row, i64 c) { return static_cast<double>(x[row * dim + c]); };
    for (i64 i = 0; i < q_len; ++i) {
      const i64 qi = head * q_len + i, visible = i + kv_len - q_len + 1;
      std::vector<double> p(static_cast<std::size_t>(visible)), dp(p.size());
      double max = -1e300, sum = 0, delta = 0;
      for (i64 j = 0; j < visible; ++j) {
        double s = 0;
        for (i64 c = 0; c < dim; ++c) s += at(q, qi, c) * at(k, kvh * kv_len + j, c);
        p[j] = scale * s;
        max = std::max(max, p[j]);
      }
      for (auto& x : p) sum += (x = std::exp(x - max));
      for (i64 j = 0; j < visible; ++j) {
        p[j] /= sum;
        double d = 0;
        for (i64 c = 0; c < dim; ++c) {
          want_out[qi * dim + c] += p[j] * at(v, kvh * kv_len + j, c);
          want_dv[(kvh * kv_len + j) * dim + c] += p[j] * at(dout, qi, c);
          d += at(dout, qi, c) * at(v, kvh * kv_len + j, c);
        }
        dp[j] = d;
        delta += p[j] * d;
      }
      for (i64 j = 0; j < visible; ++j) {
        const double ds = p[j] * (dp[j] - delta) * scale;
        for (i64 c = 0; c < dim; ++c) {
          want_dq[qi * dim + c] += ds * at(k, kvh * kv_len + j, c);
          want_dk[(kvh * kv_len + j) * dim + c] += ds * at(q, qi, c);
        }
      }
    }
  }
  const double tolerance = bf16 ? 3e-2 : 2e-5;
  auto expect_near = [&](const std::vector<float>& got, const std::vector<double>& want, const char* what) {
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], tolerance) << what << "[" << i << "] bf16 " << bf16 << " q_len " << q_len
                                              << " kv_len " << kv_len << " dim " << dim;
  };
  expect_near(out, want_out, "out");
  expect_near(dq, want_dq, "dq");
  expect_near(dk, want_dk, "dk");
  expect_near(dv, want_dv, "dv");
}

TEST(CpuAttention, TilesOverALongSequenceMatchADirectComputation) {
  for (const bool bf16 : {false, true}) {
    expect_tiles_match_direct_attention(bf16, 300, 310, 16);
    expect_tiles_match_direct_attention(bf16, 301, 311, 20);
    expect_tiles_match_direct_attention(bf16, 300, 310, 17);  // odd heads: bf16 tiles through oneDNN
  }
}

// Rows whose every key a mask hides (a padded batch item's rows) attend to nothing: zeros out, a
// log-sum-exp of -inf, and zero gradients, with f32 and with bf16 tiles, while the other rows of the
// same tiles keep the unmasked kernel's values (a bf16 tile writes its rows' exponentials into a
// buffer the thread's earlier tiles used, and scales each output row after the product: a hidden
// row must keep neither an earlier tile's values nor its scale).
void expect_fully_masked_rows_attend_to_nothing(bool bf16) {
  const i64 q_len = 600, kv_len = 100, dim = 16;  // five bf16 tiles: later ones reuse a thread's buffers
  const AttentionGeometry g{1, 1, 1, q_len, kv_len, dim, dim, 0.25f, false, 0, 0, bf16};
  const auto q = values(static_cast<std::size_t>(q_len * dim), 0.37f);
  const auto k = values(static_cast<std::size_t>(kv_len * dim), 0.11f);
  const auto v = values(static_cast<std::size_t>(kv_len * dim), 0.23f);
  const auto dout = values(static_cast<std::size_t>(q_len * dim), 0.05f);
  std::vector<float> mask(static_cast<std::size_t>(q_len * kv_len), 0.0f);
  std::vector<i64> hidden = {0, 63, 64, 599};
  for (i64 row = 7; row < q_len; row += 13) hidden.push_back(row);
  for (i64 row : hidden)
    std::fill_n(mask.begin() + row * kv_len, kv_len, -std::numeric_limits<float>::infinity());
  struct Result {
    std::vector<float> out, lse, dq, dk, dv;
  };
  auto run = [&](const float* m) {
    Result r{std::vector<float>(q.size()), std::vector<float>(static_cast<std::size_t>(q_len)),
             std::vector<float>(q.size()), std::vector<float>(k.size()), std::vector<float>(v.size())};
    attention_forward(q.data(), k.data(), v.data(), m, r.out.data(), r.lse.data(), g);
    attention_backward(q.data(), k.data(), v.data(), m, r.out.data(), r.lse.data(), dout.data(), r.dq.data(),
                       r.dk.data(), r.dv.data(), g);
    return r;
  };
  const Result masked = run(mask.data()), open = run(nullptr);
  for (i64 row = 0; row < q_len; ++row) {
    const bool is_hidden = std::find(hidden.begin(), hidden.end(), row) != hidden.end();
    if (is_hidden) {
      EXPECT_EQ(masked.lse[static_cast<std::size_t>(row)], -std::numeric_limits<float>::infinity()) << row;
    } else {
      EXPECT_EQ(masked.lse[static_cast<std::size_t>(row)], open.lse[static_cast<std::size_t>(row)]) << row;
    }
    for (i64 c = 0; c < dim; ++c) {
      const auto i = static_cast<std::size_t>(row * dim + c);
      if (is_hidden) {
        ASSERT_EQ(masked.out[i], 0.0f) << "row " << row << " bf16 " << bf16;
        ASSERT_EQ(masked.dq[i], 0.0f) << "row " << row << " bf16 " << bf16;
      } else {
        ASSERT_EQ(masked.out[i], open.out[i]) << "row " << row << " bf16 " << bf16;
      }
    }
  }
  for (float x : masked.dk) ASSERT_TRUE(std::isfinite(x));
  for (float x : masked.dv) ASSERT_TRUE(std::isfinite(x));
}

TEST(CpuAttention, RowsWithEveryKeyMaskedAttendToNothing) {
  expect_fully_masked_rows_attend_to_nothing(false);
  expect_fully_masked_rows_attend_to_nothing(true);
}

}  // namespace
}  // namespace loracpp::backend::cpu
