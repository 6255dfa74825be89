// The shared bf16 rounding of activations: one copy per unchanged tensor, a fresh one after a write.
#include "core/random.h"
#include "ops/common.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp::ops {
namespace {

TEST(AsBf16, ProjectionsOfOneTensorShareOneRoundedCopy) {
  const Tensor x = Tensor::from_floats(std::vector<float>{1.0f, 2.5f, -3.0f, 0.1f}, {2, 2});
  const Tensor first = detail::as_bf16(x), second = detail::as_bf16(x);
  EXPECT_TRUE(first.same_as(second));
  EXPECT_EQ(first.dtype(), DType::bf16);
  EXPECT_EQ(first.to_floats(), (std::vector<float>{1.0f, 2.5f, -3.0f, bf16_to_float(float_to_bf16(0.1f))}));
}

TEST(AsBf16, AWriteToTheSourceGivesAFreshCopy) {
  Tensor x = Tensor::from_floats(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}, {2, 2});
  const Tensor before = detail::as_bf16(x);
  x.mutable_data<float>()[0] = 8.0f;
  const Tensor after = detail::as_bf16(x);
  EXPECT_FALSE(after.same_as(before));
  EXPECT_EQ(after.to_floats()[0], 8.0f);
  EXPECT_EQ(before.to_floats()[0], 1.0f);
}

TEST(AsBf16, AnotherViewOfTheSameStorageIsRoundedOnItsOwn) {
  const Tensor x = Tensor::from_floats(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}, {2, 2});
  const Tensor whole = detail::as_bf16(x), row = detail::as_bf16(slice(x, 0, 1, 2)), col = detail::as_bf16(transpose(x, 0, 1));
  EXPECT_EQ(row.to_floats(), (std::vector<float>{3.0f, 4.0f}));
  EXPECT_EQ(col.to_floats(), (std::vector<float>{1.0f, 3.0f, 2.0f, 4.0f}));
  EXPECT_EQ(whole.to_floats(), (std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}));
}

}  // namespace
}  // namespace loracpp::ops

namespace loracpp::ops {
namespace {

// q, k and v of one activation through the bf16 path round it once: the second and third
// projections find the first one's copy although each rounds its own adapter in between.
TEST(AsBf16, AdaptedProjectionsOfOneActivationShareItsRoundedCopy) {
  Rng rng(3);
  const Tensor x = randn({2, 16, 8}, rng);
  const Tensor w = to_dtype(randn({6, 8}, rng), DType::bf16);
  const Tensor a = randn({2, 8}, rng).set_requires_grad(), b = randn({6, 2}, rng).set_requires_grad();
  lora_linear(x, w, Tensor(), a, b, 1.0f);
  const Tensor rounded = detail::as_bf16(x);
  lora_linear(x, w, Tensor(), a, b, 1.0f);
  EXPECT_TRUE(detail::as_bf16(x).same_as(rounded));
}

}  // namespace
}  // namespace loracpp::ops
