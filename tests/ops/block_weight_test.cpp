// A frozen weight in blocks (q8_0, q4_0; each test runs for both) in linear and lora_linear
// computes what its widened f32 values compute: outputs for a generated token (read in place) and
// for a batch (widened slices), the input's gradient (g W through the blocks) and the adapter's
// gradients, so an adapter can train over such a base.
#include "autograd/backward.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp::ops {
namespace {

void expect_close(const Tensor& got, const Tensor& want, float tolerance) {
  const auto g = got.to_floats(), w = want.to_floats();
  ASSERT_EQ(g.size(), w.size());
  for (std::size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], w[i], tolerance * (1.0f + std::abs(w[i]))) << i;
}

class BlockWeight : public ::testing::TestWithParam<DType> {};

TEST_P(BlockWeight, LinearComputesWithTheWidenedValues) {
  Rng rng(5);
  const Tensor w8 = to_dtype(randn({40, 96}, rng), GetParam()), wide = to_dtype(w8, DType::f32);
  EXPECT_EQ(w8.dtype(), GetParam());
  const Tensor bias = randn({40}, rng);
  for (const std::int64_t rows : {1, 3, 12}) {
    const Tensor x = randn({rows, 96}, rng);
    expect_close(linear(x, w8, bias), linear(x, wide, bias), 1e-5f);
  }
  const Tensor x = randn({2, 5, 96}, rng);
  expect_close(matmul(x, transpose(w8, 0, 1)), matmul(x, transpose(wide, 0, 1)), 1e-5f);
  // One output (a score head): the transposed view [96, 1] is told from a stored [96, 1] matrix by
  // its strides, as both read as contiguous.
  const Tensor head8 = to_dtype(randn({1, 96}, rng), GetParam()), head = to_dtype(head8, DType::f32);
  for (const std::int64_t rows : {1, 12}) {
    const Tensor xr = randn({rows, 96}, rng);
    expect_close(linear(xr, head8, Tensor()), linear(xr, head, Tensor()), 1e-5f);
  }
}

TEST_P(BlockWeight, AdapterGradientsOverABlockBaseMatchTheWidenedBase) {
  Rng rng(6);
  const Tensor w8 = to_dtype(randn({48, 64}, rng), GetParam()), wide = to_dtype(w8, DType::f32);
  const Tensor a0 = randn({4, 64}, rng, DType::f32, 0.1f), b0 = randn({48, 4}, rng, DType::f32, 0.1f);
  for (const std::int64_t rows : {2, 20}) {  // the fused few-row pass, and the batched products
    const Tensor x0 = randn({rows, 64}, rng);
    auto run = [&](const Tensor& w) {
      auto leaf = [](const Tensor& t) { return Tensor::from_floats(t.to_floats(), t.shape()).set_requires_grad(); };
      Tensor x = leaf(x0), a = leaf(a0), b = leaf(b0);
      const Tensor y = lora_linear(x, w, Tensor(), a, b, 2.0f);
      autograd::backward(sum(mul(y, y)));
      return std::vector<Tensor>{y, x.grad(), a.grad(), b.grad()};
    };
    const auto got = run(w8), want = run(wide);
    for (std::size_t i = 0; i < got.size(); ++i) {
      SCOPED_TRACE(i);
      expect_close(got[i], want[i], 1e-4f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BlockDTypes, BlockWeight, ::testing::Values(DType::q8_0, DType::q4_0),
                         [](const auto& param_info) { return std::string(dtype_name(param_info.param)); });

}  // namespace
}  // namespace loracpp::ops
