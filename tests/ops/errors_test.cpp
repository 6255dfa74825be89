// Misuse gets one error type whose message starts with the op's name and states what was
// expected and what was given.
#include "autograd/backward.h"
#include "backend/kernels.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp {
namespace {

using namespace ops;
using testing::throws_with_prefix;

TEST(OpErrors, ShapeMismatches) {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  EXPECT_TRUE(throws_with_prefix([&] { matmul(a, b); }, "[matmul] inner dimensions differ: a is [2, 3], b is [4, 5]"));
  EXPECT_TRUE(throws_with_prefix([&] { add(a, b); }, "[add] shapes [2, 3] and [4, 5] do not broadcast"));
  EXPECT_TRUE(throws_with_prefix([&] { linear(a, b); },
                                 "[linear] input's last dim must equal weight's in_features 5, got input [2, 3]"));
  EXPECT_TRUE(throws_with_prefix([&] { linear(Tensor(), b); },
                                 "[linear] input's last dim must equal weight's in_features 5, got input undefined"));
  EXPECT_TRUE(throws_with_prefix([&] { a.as_strided({2, 3}, {3}, 0); },
                                 "[tensor] shape [2, 3] and strides [3] differ in rank"));
  EXPECT_TRUE(throws_with_prefix([&] { rms_norm(a, Tensor::zeros({4}), 1e-5f); },
                                 "[rms_norm] weight must be [3] to match the input's last dim, got [4]"));
  EXPECT_TRUE(throws_with_prefix([&] { reshape(a, {4, 2}); },
                                 "[reshape] cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)"));
  EXPECT_TRUE(throws_with_prefix([&] { concat({a, b}, 0); }, "[concat] tensor 1 has shape [4, 5], expected [2, 3]"));
  EXPECT_TRUE(throws_with_prefix(
      [&] { scaled_dot_product_attention(Tensor::zeros({1, 3, 2, 4}), Tensor::zeros({1, 2, 2, 4}), Tensor::zeros({1, 2, 2, 4})); },
      "[attention] query heads 3 must be a multiple of key/value heads 2"));
  EXPECT_TRUE(throws_with_prefix([&] { conv2d(Tensor::zeros({1, 3, 5, 5}), Tensor::zeros({2, 4, 3, 3})); },
                                 "[conv2d] weight [2, 4, 3, 3] expects 4 input channels, input [1, 3, 5, 5] has 3"));
  EXPECT_TRUE(throws_with_prefix([&] { transpose(a, 0, 2); }, "[transpose] dim 2 out of range for a tensor of rank 2"));
}

TEST(OpErrors, WrongDtypes) {
  const Tensor f = Tensor::zeros({2, 2}), h = Tensor::zeros({2, 2}, DType::bf16), i = Tensor::zeros({2, 2}, DType::i32);
  EXPECT_TRUE(throws_with_prefix([&] { add(f, h); }, "[add] operands must share a dtype, got f32 and bf16"));
  EXPECT_TRUE(throws_with_prefix([&] { silu(i); }, "[silu] input must be a floating tensor (f32, bf16, f16), got i32"));
  EXPECT_TRUE(throws_with_prefix([&] { embedding(f, f); }, "[embedding] ids must be an i32 or i64 tensor, got f32"));
  EXPECT_TRUE(throws_with_prefix([&] { Tensor(i).set_requires_grad(); }, "[tensor] only floating tensors can require grad"));
}

TEST(OpErrors, OutOfRangeIndices) {
  const Tensor table = Tensor::zeros({7, 3});
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{2, 9}, {2});
  EXPECT_TRUE(throws_with_prefix([&] { embedding(table, ids); }, "[embedding] index 9 at position 1 is out of range [0, 7)"));
  const Tensor targets = Tensor::from_ints(std::vector<std::int64_t>{-100, -1}, {2}, DType::i32);
  EXPECT_TRUE(throws_with_prefix([&] { cross_entropy(Tensor::zeros({2, 5}), targets); },
                                 "[cross_entropy] index -1 at position 1 is out of range [0, 5)"));
  EXPECT_TRUE(throws_with_prefix([&] { slice(table, 0, 3, 9); }, "[slice] range [3, 9) is outside [0, 7] of dim 0"));
  EXPECT_TRUE(throws_with_prefix([&] { dropout(table, 1.0f, 0); }, "[dropout] probability must be in [0, 1), got 1"));
}

TEST(OpErrors, MissingKernelsFailLoudly) {
  EXPECT_TRUE(throws_with_prefix([] { LORACPP_KERNEL(Device::cuda, layer_norm_forward); },
                                 "[layer_norm_forward] has no CUDA implementation"));
  // Without a usable GPU, device memory is refused with the reason; with one, it is zero-filled.
  if (testing::cuda_available()) {
    EXPECT_EQ(Tensor::zeros({2}, DType::f32, Device::cuda).to_floats(), (std::vector<float>{0.0f, 0.0f}));
  } else {
    EXPECT_TRUE(throws_with_prefix([] { Tensor::zeros({2}, DType::f32, Device::cuda); },
                                   "[storage] cannot allocate on cuda: " + testing::cuda_unavailable_reason()));
  }
}

TEST(Dropout, ZeroesAboutPAndScalesTheRest) {
  const Tensor x = Tensor::full({100, 100}, 1.0f);
  const auto y = dropout(x, 0.25f, 99).to_floats();
  std::size_t zeros = 0;
  for (float v : y) {
    EXPECT_TRUE(v == 0.0f || std::abs(v - 1.0f / 0.75f) < 1e-6f) << v;
    zeros += v == 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(zeros) / 1e4, 0.25, 0.02);
}

TEST(Dropout, SeededMasksRepeatAndDifferBySeed) {
  const Tensor x = Tensor::full({64}, 1.0f);
  EXPECT_EQ(dropout(x, 0.5f, 7).to_floats(), dropout(x, 0.5f, 7).to_floats());
  EXPECT_NE(dropout(x, 0.5f, 7).to_floats(), dropout(x, 0.5f, 8).to_floats());
  EXPECT_EQ(dropout(x, 0.5f, 7, /*training=*/false).to_floats(), x.to_floats());
}

TEST(Dropout, GradientIsTheMask) {
  Tensor x = Tensor::full({32}, 3.0f).set_requires_grad();
  const Tensor y = dropout(x, 0.5f, 11);
  autograd::backward(sum(y));
  const auto mask = y.to_floats(), grad = x.grad().to_floats();
  for (std::size_t i = 0; i < mask.size(); ++i) EXPECT_FLOAT_EQ(grad[i], mask[i] / 3.0f);
}

}  // namespace
}  // namespace loracpp
