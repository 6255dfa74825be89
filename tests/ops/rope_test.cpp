// rope_heads (a projection's output split into heads as it is rotated) gives what the split by
// reshape and transpose followed by rope gives, bit for bit: the output, and the input's gradient
// that the backward pass writes straight into the projection's layout. Both layouts of the pairs,
// a position offset, grouped key heads' count, and an odd head count.
#include "autograd/backward.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp::ops {
namespace {

void expect_split_rotation_as_rope(std::int64_t heads, RopeLayout layout, std::int64_t offset) {
  Rng rng(11);
  const std::int64_t batch = 2, seq = 37, head_dim = 24;
  const RopeOptions options{.theta = 500.0f, .layout = layout, .position_offset = offset};
  Tensor x = randn({batch, seq, heads * head_dim}, rng);
  x.set_requires_grad();
  const Tensor upstream = randn({batch, heads, seq, head_dim}, rng);
  const Tensor fused = rope_heads(x, heads, options);
  ASSERT_EQ(fused.shape(), (Shape{batch, heads, seq, head_dim}));
  autograd::backward(sum(mul(fused, upstream)));
  const std::vector<float> fused_grad = x.grad().to_floats();

  Tensor x2 = Tensor::from_floats(x.to_floats(), x.shape());
  x2.set_requires_grad();
  const Tensor split = rope(transpose(reshape(x2, {batch, seq, heads, head_dim}), 1, 2), options);
  autograd::backward(sum(mul(split, upstream)));
  EXPECT_EQ(fused.to_floats(), split.to_floats()) << "heads " << heads;
  EXPECT_EQ(fused_grad, x2.grad().to_floats()) << "heads " << heads;
}

TEST(Rope, HeadsSplitAsTheyAreRotatedMatchTheSplitThenRotated) {
  for (const RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved})
    for (const std::int64_t heads : {1, 3, 9}) expect_split_rotation_as_rope(heads, layout, heads == 3 ? 5 : 0);
}

TEST(Rope, HeadsSplitRefusesAnInputThatIsNotWholeHeads) {
  const Tensor x = Tensor::zeros({2, 3, 10}, DType::f32, Device::cpu);
  EXPECT_THROW(rope_heads(x, 3, {}), Error);
  EXPECT_THROW(rope_heads(Tensor::zeros({6, 10}, DType::f32, Device::cpu), 1, {}), Error);
  EXPECT_THROW(rope_heads(Tensor::zeros({2, 3, 10}, DType::f32, Device::cpu), 2, {}), Error);  // head_dim 5: odd
}

}  // namespace
}  // namespace loracpp::ops
