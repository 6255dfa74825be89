// The fused output layer + cross-entropy against the two ops it replaces, on shapes large enough
// to need several chunks, with f32 and bf16 weights, frozen and trainable.
#include <algorithm>
#include <cmath>

#include "autograd/backward.h"
#include "core/random.h"
#include "ops/ops.h"
#include "ops/tape.h"
#include "test_util.h"

namespace loracpp::ops {
namespace {

struct Outcome {
  float loss = 0;
  std::vector<float> dx, dw;
};

Tensor targets_with_ignored(std::int64_t batch, std::int64_t seq, std::int64_t vocab, Rng& rng) {
  std::vector<std::int64_t> values(static_cast<std::size_t>(batch * seq));
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = i % 7 == 3 ? -100 : static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(vocab));
  return Tensor::from_ints(values, {batch, seq});
}

Tensor copy_of(const Tensor& t) { return to_dtype(Tensor::from_floats(t.to_floats(), t.shape()), t.dtype()); }

// fused: linear_cross_entropy with chunk_rows; otherwise cross_entropy(linear(x, w)).
Outcome run(const Tensor& x0, const Tensor& w0, const Tensor& targets, bool train_weight, bool fused,
            std::int64_t chunk_rows = 0) {
  Tensor x = copy_of(x0).set_requires_grad();
  Tensor w = copy_of(w0);
  if (train_weight) w.set_requires_grad();
  const Tensor loss =
      fused ? linear_cross_entropy(x, w, targets, -100, chunk_rows) : cross_entropy(linear(x, w), targets, -100);
  autograd::backward(scale(loss, 0.5f));  // a non-unit upstream gradient
  Outcome out{loss.item(), x.grad().to_floats(), {}};
  if (train_weight) out.dw = w.grad().to_floats();
  return out;
}

void expect_same(const Outcome& got, const Outcome& want, float tolerance) {
  EXPECT_NEAR(got.loss, want.loss, tolerance * std::abs(want.loss));
  ASSERT_EQ(got.dx.size(), want.dx.size());
  for (std::size_t i = 0; i < got.dx.size(); ++i) ASSERT_NEAR(got.dx[i], want.dx[i], tolerance) << "dx " << i;
  ASSERT_EQ(got.dw.size(), want.dw.size());
  for (std::size_t i = 0; i < got.dw.size(); ++i) ASSERT_NEAR(got.dw[i], want.dw[i], tolerance) << "dw " << i;
}

TEST(LinearCrossEntropy, MatchesTheLinearLayerAndTheLossInEveryChunking) {
  Rng rng(5);
  const Tensor x = randn({3, 13, 24}, rng, DType::f32, 1.0f), w = randn({301, 24}, rng, DType::f32, 0.3f);
  const Tensor targets = targets_with_ignored(3, 13, 301, rng);
  const Outcome want = run(x, w, targets, false, false);
  for (const std::int64_t chunk : {0, 1, 5, 39, 100})
    expect_same(run(x, w, targets, false, true, chunk), want, 2e-6f);
}

TEST(LinearCrossEntropy, GivesATrainableWeightItsGradient) {
  Rng rng(6);
  const Tensor x = randn({2, 9, 16}, rng, DType::f32, 1.0f), w = randn({57, 16}, rng, DType::f32, 0.3f);
  const Tensor targets = targets_with_ignored(2, 9, 57, rng);
  expect_same(run(x, w, targets, true, true, 4), run(x, w, targets, true, false), 2e-6f);
}

// A frozen bf16 weight: the unfused path rounds the normalised gradient of the logits to bf16 for
// its product with W; the fused one may instead round the unnormalised exponentials and normalise
// after the product, with the target's term exact in f32 (the CPU's cross_entropy_bf16_input_grad).
// The loss is the same f32 value; dx is held to the same bound for both, a bf16 step (2^-8) of its
// largest value from the product over an unrounded gradient (the weight's values in f32), and must
// differ from that product (the bf16 products ran).
TEST(LinearCrossEntropy, ABf16WeightTakesTheBf16ProductsAsTheUnfusedPathDoes) {
  Rng rng(7);
  const Tensor x = randn({2, 11, 32}, rng, DType::f32, 1.0f);
  const Tensor w = to_dtype(randn({97, 32}, rng, DType::f32, 0.3f), DType::bf16);
  const Tensor targets = targets_with_ignored(2, 11, 97, rng);
  const Outcome unfused = run(x, w, targets, false, false), fused = run(x, w, targets, false, true, 6);
  const Outcome exact = run(x, to_dtype(w, DType::f32), targets, false, true, 6);
  EXPECT_NEAR(fused.loss, unfused.loss, 1e-6f * std::abs(unfused.loss));
  float largest = 0;
  for (float v : exact.dx) largest = std::max(largest, std::abs(v));
  ASSERT_GT(largest, 0.0f);
  ASSERT_EQ(fused.dx.size(), exact.dx.size());
  ASSERT_EQ(unfused.dx.size(), exact.dx.size());
  float fused_worst = 0;
  for (std::size_t i = 0; i < exact.dx.size(); ++i) {
    ASSERT_NEAR(unfused.dx[i], exact.dx[i], largest / 256) << "unfused dx " << i;
    ASSERT_NEAR(fused.dx[i], exact.dx[i], largest / 256) << "fused dx " << i;
    fused_worst = std::max(fused_worst, std::abs(fused.dx[i] - exact.dx[i]));
  }
  EXPECT_GT(fused_worst, 0.0f) << "the fused path took f32 products";
}

TEST(LinearCrossEntropy, AllTargetsIgnoredGiveZeroLossAndZeroGradient) {
  Rng rng(8);
  const Tensor x = randn({1, 4, 8}, rng, DType::f32, 1.0f), w = randn({10, 8}, rng, DType::f32, 0.3f);
  const Tensor targets = Tensor::from_ints(std::vector<std::int64_t>(4, -100), {1, 4});
  const Outcome out = run(x, w, targets, true, true, 3);
  EXPECT_EQ(out.loss, 0.0f);
  for (float v : out.dx) ASSERT_EQ(v, 0.0f);
  for (float v : out.dw) ASSERT_EQ(v, 0.0f);
}

TEST(LinearCrossEntropy, WithoutGradModeItOnlyComputesTheLoss) {
  Rng rng(9);
  const Tensor x = randn({2, 5, 8}, rng, DType::f32, 1.0f).set_requires_grad(), w = randn({21, 8}, rng, DType::f32, 0.3f);
  const Tensor targets = targets_with_ignored(2, 5, 21, rng);
  autograd::NoGradGuard no_grad;
  const Tensor fused = linear_cross_entropy(x, w, targets, -100, 3);
  EXPECT_FALSE(fused.requires_grad());
  EXPECT_NEAR(fused.item(), cross_entropy(linear(x, w), targets).item(), 1e-6f);
}

TEST(LinearCrossEntropy, DefaultChunksSplitTheRowsEvenlyWithinTheLogitsBudget) {
  struct Case {
    std::int64_t rows, vocab, in, expected;
  };
  for (const auto& [rows, vocab, in, expected] : std::vector<Case>{
           {1024, 32000, 288, 512},  // x's 256K values set the size (910 rows), split evenly into 2
           {1024, 49152, 576, 342},  // 455 rows by x, 3 even chunks
           {1024, 1000, 4096, 1024}, // a small vocabulary: 8M logits hold every row
           {100, 32000, 288, 100},   // fewer rows than one chunk
           {8192, 151936, 64, 256},  // a narrow x and a large vocabulary: the 32M-logit cap, then 256
           {1, 5, 3, 1}}) {
    const std::int64_t chunk = default_cross_entropy_chunk(rows, vocab, in);
    EXPECT_EQ(chunk, expected) << rows << " rows, vocab " << vocab << ", in " << in;
    const std::int64_t chunks = (rows + chunk - 1) / chunk;
    EXPECT_GE(rows - (chunks - 1) * chunk, chunk - chunks) << "the last chunk is nearly as long as the others";
  }
}

TEST(LinearCrossEntropy, RefusesMismatchedShapes) {
  const Tensor x = Tensor::zeros({2, 3, 8}), w = Tensor::zeros({10, 8});
  EXPECT_TRUE(testing::throws_with_prefix(
      [&] { linear_cross_entropy(x, w, Tensor::from_ints(std::vector<std::int64_t>(6, 1), {6})); },
      "[linear_cross_entropy] targets must have shape [2, 3] for input [2, 3, 8], got [6]"));
  EXPECT_TRUE(testing::throws_with_prefix(
      [&] { linear_cross_entropy(x, Tensor::zeros({10, 7}), Tensor::from_ints(std::vector<std::int64_t>(6, 1), {2, 3})); },
      "[linear_cross_entropy] input's last dim must equal weight's in_features 7, got [2, 3, 8]"));
  EXPECT_TRUE(testing::throws_with_prefix(
      [&] { linear_cross_entropy(x, w, Tensor::from_ints(std::vector<std::int64_t>(6, 10), {2, 3})); },
      "[linear_cross_entropy] index 10 at position 0 is out of range [0, 10)"));
}

}  // namespace
}  // namespace loracpp::ops
