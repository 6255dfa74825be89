// The CPU's fused attention reads key and value heads that lie apart (a KV cache's slice, each
// head's rows followed by room for more) exactly as it reads packed ones: the same output,
// log-sum-exp and gradients, bit for bit, with f32 and with bf16 tile products, grouped-query,
// for one generated query and for a prompt's worth. The room between heads holds NaNs, which a
// wrong stride would read.
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
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

}  // namespace
}  // namespace loracpp::backend::cpu
