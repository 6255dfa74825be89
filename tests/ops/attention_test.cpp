// Attention over a KV cache's slices, as generation calls it (no gradient recorded, keys and values
// viewed in place), gives what it gives over packed copies of them, bit for bit: one and several
// key/value heads, a batch of two, one new query and several, f32 and bf16 tile products. With a
// gradient recorded it gives the same output, and gradients for the slices. A cache held in bf16
// gives what its values widened to f32 give, read in place or, with a gradient recorded, widened.
#include "autograd/backward.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp::ops {
namespace {

void expect_cache_slices_read_as_copies(std::int64_t kv_heads, std::int64_t q_len, bool bf16) {
  Rng rng(5);
  const std::int64_t batch = 2, group = 3, capacity = 100, kv_len = 80, dim = 16;
  const Tensor keys = randn({batch, kv_heads, capacity, dim}, rng), values = randn({batch, kv_heads, capacity, dim}, rng);
  const Tensor q = randn({batch, kv_heads * group, q_len, dim}, rng);
  const Tensor k = slice(keys, 2, 0, kv_len), v = slice(values, 2, 0, kv_len);
  ASSERT_FALSE(k.is_contiguous());
  const AttentionOptions options{.causal = true, .bf16_products = bf16};
  std::vector<float> in_place, copied;
  {
    autograd::NoGradGuard no_grad;
    in_place = scaled_dot_product_attention(q, k, v, options).to_floats();
    copied = scaled_dot_product_attention(q, contiguous(k), contiguous(v), options).to_floats();
  }
  EXPECT_EQ(in_place, copied) << "kv_heads " << kv_heads << " q_len " << q_len << " bf16 " << bf16;

  Tensor k_leaf = keys, v_leaf = values;  // recorded: the slices' gradients reach the whole tensors
  k_leaf.set_requires_grad();
  v_leaf.set_requires_grad();
  const Tensor out = scaled_dot_product_attention(q, slice(k_leaf, 2, 0, kv_len), slice(v_leaf, 2, 0, kv_len), options);
  EXPECT_EQ(out.to_floats(), copied);
  autograd::backward(sum(out));
  ASSERT_TRUE(k_leaf.grad().defined() && v_leaf.grad().defined());
  EXPECT_EQ(k_leaf.grad().shape(), keys.shape());
}

TEST(Attention, ACacheSliceIsReadInPlaceWithTheCopiesResults) {
  for (const bool bf16 : {false, true})
    for (const std::int64_t kv_heads : {1, 2})
      for (const std::int64_t q_len : {1, 70}) expect_cache_slices_read_as_copies(kv_heads, q_len, bf16);
}

void expect_bf16_cache_as_widened(std::int64_t q_len, bool bf16) {
  Rng rng(6);
  const std::int64_t batch = 2, kv_heads = 2, group = 3, capacity = 100, kv_len = 80, dim = 16;
  const Tensor keys = to_dtype(randn({batch, kv_heads, capacity, dim}, rng), DType::bf16);
  const Tensor values = to_dtype(randn({batch, kv_heads, capacity, dim}, rng), DType::bf16);
  const Tensor q = randn({batch, kv_heads * group, q_len, dim}, rng);
  const Tensor k = slice(keys, 2, 0, kv_len), v = slice(values, 2, 0, kv_len);
  const AttentionOptions options{.causal = true, .bf16_products = bf16};
  std::vector<float> in_place, widened;
  {
    autograd::NoGradGuard no_grad;
    in_place = scaled_dot_product_attention(q, k, v, options).to_floats();
    widened = scaled_dot_product_attention(q, to_dtype(k, DType::f32), to_dtype(v, DType::f32), options).to_floats();
  }
  ASSERT_EQ(in_place.size(), widened.size());
  for (std::size_t i = 0; i < in_place.size(); ++i)
    ASSERT_NEAR(in_place[i], widened[i], 2e-6f) << i << " q_len " << q_len << " bf16 " << bf16;
  Tensor q_leaf = scale(q, 1.0f);  // recorded: through the f32 kernels, the keys and values widened
  q_leaf.set_requires_grad();
  const Tensor out = scaled_dot_product_attention(q_leaf, k, v, options);
  EXPECT_EQ(out.dtype(), DType::f32);
  const auto recorded = out.to_floats();
  for (std::size_t i = 0; i < recorded.size(); ++i) ASSERT_NEAR(recorded[i], widened[i], 2e-6f) << i;
  autograd::backward(sum(out));
  EXPECT_TRUE(q_leaf.grad().defined());
}

TEST(Attention, ABf16CacheGivesWhatItsWidenedValuesGive) {
  for (const bool bf16 : {false, true})
    for (const std::int64_t q_len : {1, 70}) expect_bf16_cache_as_widened(q_len, bf16);
}

}  // namespace
}  // namespace loracpp::ops
