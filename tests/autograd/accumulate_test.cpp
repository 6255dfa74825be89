// Gradients that meet at one tensor are summed, in place where the engine alone holds the sum:
// residual chains against finite differences, and tensors a caller or another slot can see
// (the caller's upstream gradient, one gradient handed to two inputs) left as they were.
#include "autograd/backward.h"
#include "autograd/gradcheck.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp {
namespace {

TEST(GradientSums, AResidualChainMatchesFiniteDifferences) {
  Rng rng(21);
  Tensor x = randn({3, 8}, rng);
  x.set_requires_grad();
  const Tensor w1 = randn({3, 8}, rng), w2 = randn({3, 8}, rng), w3 = randn({8}, rng);
  // Each layer uses h twice (the residual and the branch), so h's gradient gathers two terms.
  const auto fn = [&](const std::vector<Tensor>& in) {
    Tensor h = ops::scale(in[0], 1.5f);
    for (const Tensor& w : {w1, w2}) h = ops::add(h, ops::mul(ops::mul(h, w), h));
    return ops::add(h, ops::mul(h, w3));
  };
  const auto result = autograd::gradcheck(fn, {x});
  EXPECT_TRUE(result.ok) << result.report;
  EXPECT_GT(result.checked, 0);
}

TEST(GradientSums, TheCallersUpstreamGradientIsNotWrittenTo) {
  Rng rng(22);
  Tensor x = randn({4, 6}, rng);
  x.set_requires_grad();
  const Tensor y = ops::scale(x, 2.0f);
  const Tensor root = ops::add(ops::add(y, y), y);  // y's gradient: the upstream one, three times
  const Tensor upstream = randn({4, 6}, rng);
  const auto before = upstream.to_floats();
  autograd::backward(root, upstream);
  EXPECT_EQ(upstream.to_floats(), before);
  const auto g = x.grad().to_floats();
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_FLOAT_EQ(g[i], 6.0f * before[i]) << i;
}

TEST(GradientSums, OneGradientHandedToTwoInputsStaysWholeForBoth) {
  Rng rng(23);
  Tensor x = randn({5}, rng), z = randn({5}, rng);
  x.set_requires_grad();
  z.set_requires_grad();
  const Tensor a = ops::scale(x, 3.0f), b = ops::scale(z, 1.0f);
  // add hands one gradient tensor to a and to b; a then gathers a second term from mul.
  const Tensor root = ops::sum(ops::add(ops::add(a, b), ops::mul(a, a)));
  autograd::backward(root);
  const auto xv = x.to_floats(), gx = x.grad().to_floats(), gz = z.grad().to_floats();
  for (std::size_t i = 0; i < xv.size(); ++i) {
    EXPECT_NEAR(gx[i], 3.0f * (1.0f + 2.0f * 3.0f * xv[i]), 1e-4f) << i;
    EXPECT_FLOAT_EQ(gz[i], 1.0f) << i;  // b's gradient: the shared term alone
  }
}

}  // namespace
}  // namespace loracpp
