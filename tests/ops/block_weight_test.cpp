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

// An embedding table in blocks (a GGUF file's token table) gathers rows of blocks and widens them:
// the rows of the widened table, in f32.
TEST_P(BlockWeight, EmbeddingGathersWidenedRows) {
  Rng rng(8);
  const Tensor table = to_dtype(randn({10, 64}, rng), GetParam()), wide = to_dtype(table, DType::f32);
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{3, 0, 9, 3, 7, 1}, {2, 3});
  const Tensor got = embedding(table, ids);
  EXPECT_EQ(got.dtype(), DType::f32);
  EXPECT_EQ(got.shape(), (Shape{2, 3, 64}));
  EXPECT_EQ(got.to_floats(), embedding(wide, ids).to_floats());
}

// Under Bf16BlockProducts a LoRA layer and the output layer's loss over blocks compute what the bf16
// path computes over the blocks' values rounded to bf16: the same outputs and gradients, bit for
// bit. Outside it they are the f32 products of the widened values (the tests above).
TEST_P(BlockWeight, UnderBf16BlockProductsTheyComputeAsTheBf16Path) {
  Rng rng(7);
  const Tensor wb = to_dtype(randn({48, 64}, rng), GetParam());
  const Tensor w16 = to_dtype(to_dtype(wb, DType::f32), DType::bf16);
  const Tensor a0 = randn({4, 64}, rng, DType::f32, 0.1f), b0 = randn({48, 4}, rng, DType::f32, 0.1f);
  const Tensor x0 = randn({20, 64}, rng);
  std::vector<std::int64_t> ids(20);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i * 7 % 48);
  const Tensor targets = Tensor::from_ints(ids, {20});
  auto run = [&](const Tensor& w) {
    auto leaf = [](const Tensor& t) { return Tensor::from_floats(t.to_floats(), t.shape()).set_requires_grad(); };
    Tensor x = leaf(x0), a = leaf(a0), b = leaf(b0), h = leaf(x0);
    const Tensor y = lora_linear(x, w, Tensor(), a, b, 2.0f);
    const Tensor loss = linear_cross_entropy(h, w, targets);
    autograd::backward(add(sum(mul(y, y)), loss));
    return std::vector<Tensor>{y, loss, x.grad(), a.grad(), b.grad(), h.grad()};
  };
  std::vector<Tensor> got;
  {
    Bf16BlockProducts bf16;
    EXPECT_TRUE(bf16_block_products());
    {
      const Bf16BlockProducts unchanged(false);  // off leaves the setting as it was
      EXPECT_TRUE(bf16_block_products());
    }
    EXPECT_TRUE(bf16_block_products());
    got = run(wb);
  }
  EXPECT_FALSE(bf16_block_products());
  {
    const Bf16BlockProducts unchanged(false);
    EXPECT_FALSE(bf16_block_products());
  }
  const auto want = run(w16), f32 = run(wb);
  for (std::size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].to_floats(), want[i].to_floats());
  }
  EXPECT_NE(got[0].to_floats(), f32[0].to_floats());  // the f32 products of the same blocks differ
}

INSTANTIATE_TEST_SUITE_P(BlockDTypes, BlockWeight, ::testing::Values(DType::q8_0, DType::q4_0),
                         [](const auto& param_info) { return std::string(dtype_name(param_info.param)); });

}  // namespace
}  // namespace loracpp::ops
