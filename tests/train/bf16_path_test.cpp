// The bf16 path (frozen linear weights in bf16, products accumulated in f32, adapters and optimiser
// in f32) follows the f32 reference path's loss curve within bf16 tolerance, on the real
// stories260K model.
#include "autograd/backward.h"
#include "backend/cpu/gemm_bf16.h"
#include "core/random.h"
#include "loracpp/finetuner.h"
#include "lora/adapter.h"
#include "models/llama.h"
#include "ops/ops.h"
#include "ops/tape.h"
#include "test_util.h"
#include "train/stories_lora_run.h"

namespace loracpp {
namespace {

TEST(Bf16Path, LossCurveMatchesTheF32PathWithinBf16Tolerance) {
  const auto f32 = testing::stories_lora_losses(DType::f32, Device::cpu, 12),
             bf16 = testing::stories_lora_losses(DType::bf16, Device::cpu, 12);
  ASSERT_EQ(f32.size(), 12u);
  ASSERT_EQ(bf16.size(), 12u);
  for (std::size_t i = 0; i < f32.size(); ++i) EXPECT_NEAR(bf16[i], f32[i], 0.01 * f32[i] + 0.005) << "step " << i + 1;
  EXPECT_LT(bf16.back(), bf16.front());  // and it learns
}

TEST(Bf16Path, MixedProductMatchesTheF32ProductWithinBf16Rounding) {
  Rng rng(4);
  const Tensor x = randn({3, 5, 64}, rng), w = randn({48, 64}, rng);
  autograd::NoGradGuard no_grad;
  const auto want = ops::linear(x, w).to_floats();
  const auto got = ops::linear(x, ops::to_dtype(w, DType::bf16)).to_floats();
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 0.05 + 0.01 * std::abs(want[i])) << i;
}

TEST(Bf16Path, InputGradientFlowsThroughABf16FrozenWeight) {
  Rng rng(6);
  const Tensor w = ops::to_dtype(randn({8, 16}, rng), DType::bf16);
  Tensor x = randn({4, 16}, rng);
  x.set_requires_grad();
  const Tensor loss = ops::sum(ops::linear(x, w));
  autograd::backward(loss);
  ASSERT_TRUE(x.grad().defined());
  // d(sum(x Wᵀ))/dx = column sums of W, the same for every row.
  const auto g = x.grad().to_floats();
  const auto wf = ops::to_dtype(w, DType::f32).to_floats();
  for (std::int64_t c = 0; c < 16; ++c) {
    float want = 0;
    for (std::int64_t r = 0; r < 8; ++r) want += wf[static_cast<std::size_t>(r * 16 + c)];
    EXPECT_NEAR(g[static_cast<std::size_t>(c)], want, 2e-2f * (1.0f + std::abs(want)));
  }
}

// Fused attention with bf16 tile products against the f32 kernel: output and the q, k, v gradients,
// grouped-query, over several tiles of queries and a length that is no tile multiple; causal, and
// with an additive padding mask over more keys than queries. Where this CPU has no native bf16
// products the kernel keeps its f32 operands, and must give the f32 kernel's values exactly.
void expect_bf16_attention_matches_f32(std::int64_t q_len, std::int64_t kv_len, bool causal, bool masked) {
  Rng rng(9);
  const Tensor q0 = randn({2, 4, q_len, 32}, rng), k0 = randn({2, 2, kv_len, 32}, rng),
               v0 = randn({2, 2, kv_len, 32}, rng);
  const Tensor upstream = randn({2, 4, q_len, 32}, rng);
  Tensor mask;
  if (masked) {  // the second batch item cannot see its last 40 keys
    std::vector<float> m(static_cast<std::size_t>(2 * kv_len), 0.0f);
    for (std::int64_t j = kv_len - 40; j < kv_len; ++j) m[static_cast<std::size_t>(kv_len + j)] = -1e9f;
    mask = Tensor::from_floats(m, {2, 1, 1, kv_len});
  }
  auto run = [&](bool bf16) {
    Tensor q = ops::scale(q0, 1.0f), k = ops::scale(k0, 1.0f), v = ops::scale(v0, 1.0f);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad();
    const Tensor out =
        ops::scaled_dot_product_attention(q, k, v, {.causal = causal, .mask = mask, .bf16_products = bf16});
    autograd::backward(ops::sum(ops::mul(out, upstream)));
    return std::vector<std::vector<float>>{out.to_floats(), q.grad().to_floats(), k.grad().to_floats(),
                                           v.grad().to_floats()};
  };
  const auto want = run(false), got = run(true);
  const char* names[] = {"output", "dq", "dk", "dv"};
  for (std::size_t t = 0; t < want.size(); ++t) {
    double scale = 0, worst = 0;
    for (float w : want[t]) scale = std::max(scale, static_cast<double>(std::abs(w)));
    for (std::size_t i = 0; i < want[t].size(); ++i)
      worst = std::max(worst, static_cast<double>(std::abs(got[t][i] - want[t][i])));
    EXPECT_LT(worst, 0.02 * scale) << names[t] << ": worst difference " << worst << " against a scale of " << scale;
    if (backend::cpu::bf16_products_native())
      EXPECT_GT(worst, 0.0) << names[t] << " took the f32 products";  // the bf16 products did run
    else
      EXPECT_EQ(worst, 0.0) << names[t] << " differs from the f32 kernel's";
  }
}

TEST(Bf16Path, AttentionInBf16MatchesTheF32KernelWithinBf16Rounding) {
  expect_bf16_attention_matches_f32(150, 150, true, false);
}

TEST(Bf16Path, MaskedAttentionOverMoreKeysThanQueriesInBf16MatchesTheF32Kernel) {
  expect_bf16_attention_matches_f32(70, 200, false, true);
  expect_bf16_attention_matches_f32(70, 200, true, true);  // causal with a cache's worth of earlier keys
}

}  // namespace
}  // namespace loracpp

namespace loracpp {
namespace {

// A tied embedding table is the output layer's weight too: on the bf16 path it is stored in bf16
// (so that the largest product runs at the bf16 rate), its rows are gathered without widening the
// table, and the hidden states stay f32. Logits and loss follow the f32 model's within bf16 rounding.
TEST(Bf16Path, TiedEmbeddingTableIsStoredInBf16AndHiddenStatesStayF32) {
  auto reference = FineTuner::load(testing::shared_path("models/stories260K/stories260K.bin"));
  auto tuner = FineTuner::load(testing::shared_path("models/stories260K/stories260K.bin"));
  models::LlamaModel& model = tuner.model();
  ASSERT_TRUE(model.config().tie_word_embeddings);
  model.store_weights(DType::bf16);
  EXPECT_EQ(model.weight("model.embed_tokens.weight").dtype(), DType::bf16);
  EXPECT_EQ(model.weight("model.norm.weight").dtype(), DType::f32);
  EXPECT_EQ(model.dtype(), DType::f32);

  autograd::NoGradGuard no_grad;
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{1, 403, 261, 37, 300, 15, 2, 99}, {2, 4});
  const Tensor logits = model.forward(ids), want = reference.model().forward(ids);
  EXPECT_EQ(logits.dtype(), DType::f32);
  const auto got = logits.to_floats(), expected = want.to_floats();
  ASSERT_EQ(got.size(), expected.size());
  double scale = 0, worst = 0;
  for (float w : expected) scale = std::max(scale, static_cast<double>(std::abs(w)));
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::abs(got[i] - expected[i])));
  EXPECT_LT(worst, 0.03 * scale) << "worst logit difference " << worst << " against a scale of " << scale;
  EXPECT_GT(worst, 0.0);  // the bf16 table was used
  const float loss = model.loss(ids).item(), want_loss = reference.model().loss(ids).item();
  EXPECT_NEAR(loss, want_loss, 0.01 * want_loss);
}

TEST(Bf16Path, EmbeddingRowsOfABf16TableAreGatheredExactly) {
  Rng rng(12);
  const Tensor table = ops::to_dtype(randn({10, 6}, rng), DType::bf16);
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{7, 0, 7, 3}, {2, 2});
  const Tensor rows = ops::embedding(table, ids);
  EXPECT_EQ(rows.dtype(), DType::bf16);
  ASSERT_EQ(rows.shape(), (Shape{2, 2, 6}));
  const auto t = table.to_floats(), r = rows.to_floats();
  const std::int64_t picked[] = {7, 0, 7, 3};
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t d = 0; d < 6; ++d) EXPECT_EQ(r[i * 6 + d], t[static_cast<std::size_t>(picked[i]) * 6 + d]);
}

}  // namespace
}  // namespace loracpp

namespace loracpp {
namespace {

// A module saved whole (modules_to_save) trains in f32 on the bf16 path too, even the tied table
// that the bf16 path stores in bf16; its gradient reaches it through both of its uses.
TEST(Bf16Path, ASavedModuleTrainsInF32OverABf16Base) {
  auto tuner = FineTuner::load(testing::shared_path("models/stories260K/stories260K.bin"));
  models::LlamaModel& model = tuner.model();
  model.store_weights(DType::bf16);
  lora::LoraConfig config;
  config.r = 2;
  config.target_modules = {"q_proj"};
  config.modules_to_save = {"embed_tokens"};
  tuner.add_adapter("default", config, 5);
  bool listed = false;
  for (const auto& p : lora::adapter_parameters(model, "default", config))
    listed |= p.name.find("embed_tokens") != std::string::npos;
  EXPECT_TRUE(listed);
  const Tensor& table = model.weight("model.embed_tokens.weight");
  EXPECT_EQ(table.dtype(), DType::f32);
  ASSERT_TRUE(table.requires_grad());
  EXPECT_EQ(model.weight("model.layers.0.self_attn.q_proj.weight").dtype(), DType::bf16);
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{1, 403, 261, 37, 300, 15, 2, 99}, {2, 4});
  autograd::backward(model.loss(ids));
  ASSERT_TRUE(table.grad().defined());
  double norm = 0;
  for (float g : table.grad().to_floats()) norm += static_cast<double>(g) * g;
  EXPECT_GT(norm, 0.0);
}

}  // namespace
}  // namespace loracpp
