// The LoRA rule: a tensor that does not require grad gets no gradient buffer and no node, and a
// matmul with a frozen weight computes only the input gradient, never the weight gradient.
#include "autograd/backward.h"
#include "backend/kernels.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp {
namespace {

using namespace ops;

struct GemmCount {
  std::uint64_t calls, flops;
};
GemmCount backward_gemms(const Tensor& loss) {
  auto& counters = backend::gemm_counters();
  counters.reset();
  autograd::backward(loss);
  return {counters.calls.load(), counters.flops.load()};
}

TEST(FrozenWeight, LinearWithFrozenWeightSkipsTheWeightGradientGemm) {
  Rng rng(1);
  const std::int64_t batch = 6, in = 32, out = 24;
  Tensor x = randn({batch, in}, rng).set_requires_grad();
  const Tensor w = randn({out, in}, rng);  // frozen
  const auto count = backward_gemms(sum(linear(x, w)));
  EXPECT_EQ(count.calls, 1u);                                          // dx = g @ W only
  EXPECT_EQ(count.flops, static_cast<std::uint64_t>(2 * batch * in * out));
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(FrozenWeight, TrainableWeightComputesBothGemms) {
  Rng rng(2);
  Tensor x = randn({6, 32}, rng).set_requires_grad();
  Tensor w = randn({24, 32}, rng).set_requires_grad();
  const auto count = backward_gemms(sum(linear(x, w)));
  EXPECT_EQ(count.calls, 2u);
  EXPECT_TRUE(w.grad().defined());
}

TEST(FrozenWeight, LoraLayerNeverMultipliesByTheFullWeightInBackward) {
  // y = x W^T + s (x A^T) B^T with W frozen and the input data constant: the backward pass may
  // only run the three rank-r GEMMs (dB, the gradient through B, dA).
  Rng rng(3);
  const std::int64_t tokens = 16, in = 64, out = 48, r = 4;
  const Tensor x = randn({2, tokens / 2, in}, rng);
  const Tensor w = randn({out, in}, rng);
  Tensor a = randn({r, in}, rng, DType::f32, 0.1f).set_requires_grad();
  Tensor b = randn({out, r}, rng, DType::f32, 0.1f).set_requires_grad();
  const Tensor y = add(linear(x, w), scale(linear(linear(x, a), b), 2.0f));
  const auto count = backward_gemms(sum(y));
  EXPECT_EQ(count.calls, 3u);
  EXPECT_EQ(count.flops, static_cast<std::uint64_t>(2 * tokens * r * (out + out + in)));
  EXPECT_FALSE(w.grad().defined());
  EXPECT_EQ(a.grad().shape(), (Shape{r, in}));
  EXPECT_EQ(b.grad().shape(), (Shape{out, r}));
}

TEST(FrozenWeight, NothingIsRecordedWithoutATensorThatNeedsGrad) {
  Rng rng(4);
  const Tensor x = randn({3, 5}, rng), w = randn({4, 5}, rng);
  const Tensor y = linear(x, w);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

TEST(FrozenWeight, NoGradScopeRecordsNothing) {
  Rng rng(5);
  Tensor w = randn({4, 5}, rng).set_requires_grad();
  Tensor y;
  {
    autograd::NoGradGuard no_grad;
    y = linear(randn({3, 5}, rng), w);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(linear(randn({3, 5}, rng), w).requires_grad());  // recording is back on afterwards
}

TEST(FrozenWeight, EmbeddingWithFrozenTableProducesNoGradient) {
  Rng rng(6);
  const Tensor table = randn({10, 4}, rng);
  Tensor scale_param = Tensor::full({4}, 2.0f).set_requires_grad();
  const Tensor y = mul(embedding(table, Tensor::from_ints(std::vector<std::int64_t>{1, 3}, {2})), scale_param);
  autograd::backward(sum(y));
  EXPECT_FALSE(table.grad().defined());
  EXPECT_TRUE(scale_param.grad().defined());
}

TEST(Autograd, GradientsAccumulateAcrossUsesAndCalls) {
  Tensor x = Tensor::from_floats(std::vector<float>{1, 2}, {2}).set_requires_grad();
  autograd::backward(sum(mul(x, x)));  // d/dx sum(x^2) = 2x
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{2, 4}));
  autograd::backward(sum(add(x, x)));  // accumulates 2 more
  EXPECT_EQ(x.grad().to_floats(), (std::vector<float>{4, 6}));
}

TEST(Autograd, BackwardNeedsARootThatRequiresGrad) {
  EXPECT_TRUE(testing::throws_with_prefix([] { autograd::backward(Tensor::full({}, 1.0f)); },
                                          "[backward] the tensor does not require grad"));
  Tensor x = Tensor::full({3}, 1.0f).set_requires_grad();
  EXPECT_TRUE(testing::throws_with_prefix([&] { autograd::backward(scale(x, 2.0f)); },
                                          "[backward] a non-scalar root [3] needs an explicit gradient"));
}

}  // namespace
}  // namespace loracpp
