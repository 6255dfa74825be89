// The bf16 path (frozen linear weights in bf16, products accumulated in f32, adapters and optimiser
// in f32) follows the f32 reference path's loss curve within bf16 tolerance, on the real
// stories260K model.
#include <functional>

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

// The MLP of the bf16 LoRA path: gate and up projections (bf16 weights, f32 adapters) into SwiGLU.
// SwiGLU's backward hands their gradients over already rounded to bf16, and each projection
// multiplies them as they come; `between` puts an op after each projection first, as a model
// without that hand-over would see it.
struct MlpGradients {
  std::vector<float> dx, da_gate, db_gate, da_up, db_up;
};

MlpGradients bf16_mlp_gradients(const std::function<Tensor(const Tensor&)>& between, bool extra_use = false) {
  Rng rng(31);
  const std::int64_t rows = 40, in = 48, hidden = 80, r = 4;
  Tensor x = randn({rows, in}, rng);
  const Tensor w_gate = ops::to_dtype(randn({hidden, in}, rng), DType::bf16),
               w_up = ops::to_dtype(randn({hidden, in}, rng), DType::bf16);
  Tensor a_gate = randn({r, in}, rng, DType::f32, 0.2f), b_gate = randn({hidden, r}, rng, DType::f32, 0.2f),
         a_up = randn({r, in}, rng, DType::f32, 0.2f), b_up = randn({hidden, r}, rng, DType::f32, 0.2f);
  const Tensor upstream = randn({rows, hidden}, rng);
  for (Tensor* t : {&x, &a_gate, &b_gate, &a_up, &b_up}) t->set_requires_grad();
  const Tensor gate = between(ops::lora_linear(x, w_gate, Tensor(), a_gate, b_gate, 0.5f));
  const Tensor up = between(ops::lora_linear(x, w_up, Tensor(), a_up, b_up, 0.5f));
  Tensor out = ops::mul(ops::swiglu(gate, up), upstream);
  if (extra_use) out = ops::add(out, ops::mul(gate, upstream));  // gate's gradient gathers a second term
  autograd::backward(ops::sum(out));
  return {x.grad().to_floats(),      a_gate.grad().to_floats(), b_gate.grad().to_floats(),
          a_up.grad().to_floats(),   b_up.grad().to_floats()};
}

TEST(Bf16Path, SwigluHandsItsProjectionsGradientsInBf16) {
  Rng rng(32);
  const Tensor w = ops::to_dtype(randn({24, 16}, rng), DType::bf16);
  Tensor a = randn({2, 16}, rng), b = randn({24, 2}, rng);
  a.set_requires_grad();
  b.set_requires_grad();
  const Tensor x = randn({32, 16}, rng);
  const Tensor gate = ops::lora_linear(x, w, Tensor(), a, b, 1.0f), up = ops::lora_linear(x, w, Tensor(), a, b, 1.0f);
  ASSERT_TRUE(gate.grad_fn() && gate.grad_fn()->takes_bf16_grad);
  const Tensor y = ops::swiglu(gate, up);
  const auto grads = y.grad_fn()->backward(*y.grad_fn(), Tensor::full(y.shape(), 1.0f));
  ASSERT_EQ(grads.size(), 2u);
  EXPECT_EQ(grads[0].dtype(), DType::bf16);
  EXPECT_EQ(grads[1].dtype(), DType::bf16);
  // Behind an op that takes f32 gradients only, SwiGLU's stay f32.
  const Tensor z = ops::swiglu(ops::scale(gate, 1.0f), up);
  EXPECT_EQ(z.grad_fn()->backward(*z.grad_fn(), Tensor::full(z.shape(), 1.0f))[0].dtype(), DType::f32);
}

TEST(Bf16Path, GradientsHandedOverInBf16EqualThoseRoundedByTheProjection) {
  // The same rounding either way (round to nearest even), so the same gradients to the last bit.
  const auto direct = bf16_mlp_gradients([](const Tensor& t) { return t; });
  const auto rounded_later = bf16_mlp_gradients([](const Tensor& t) { return ops::scale(t, 1.0f); });
  EXPECT_EQ(direct.dx, rounded_later.dx);
  EXPECT_EQ(direct.da_gate, rounded_later.da_gate);
  EXPECT_EQ(direct.db_gate, rounded_later.db_gate);
  EXPECT_EQ(direct.da_up, rounded_later.da_up);
  EXPECT_EQ(direct.db_up, rounded_later.db_up);
}

TEST(Bf16Path, ABf16GradientJoinedByASecondTermIsSummedInF32) {
  // gate's gradient: SwiGLU's term (bf16) and the extra use's (f32). The engine widens the first
  // and sums in f32; the projection rounds the sum. Against the sum of the f32 terms, rounded
  // once: within bf16's resolution.
  const auto joined = bf16_mlp_gradients([](const Tensor& t) { return t; }, true);
  const auto reference = bf16_mlp_gradients([](const Tensor& t) { return ops::scale(t, 1.0f); }, true);
  const auto close = [](const std::vector<float>& got, const std::vector<float>& want) {
    double scale = 0;
    for (float v : want) scale = std::max(scale, static_cast<double>(std::abs(v)));
    return testing::all_close(got, want, 1e-2 * scale, 1e-2);
  };
  EXPECT_TRUE(close(joined.dx, reference.dx));
  EXPECT_TRUE(close(joined.da_gate, reference.da_gate));
  EXPECT_TRUE(close(joined.db_gate, reference.db_gate));
  EXPECT_TRUE(close(joined.da_up, reference.da_up));
  EXPECT_TRUE(close(joined.db_up, reference.db_up));
}

// Frozen bf16 projections without an adapter (the layers LoRA does not target) take SwiGLU's
// gradients in bf16 too, and give the input gradient they gave when they rounded it themselves.
TEST(Bf16Path, FrozenBf16ProjectionsTakeSwigluGradientsInBf16) {
  Rng rng(33);
  const Tensor w_gate = ops::to_dtype(randn({80, 48}, rng), DType::bf16),
               w_up = ops::to_dtype(randn({80, 48}, rng), DType::bf16);
  const Tensor x0 = randn({2, 20, 48}, rng), upstream = randn({2, 20, 80}, rng);
  auto input_gradient = [&](const std::function<Tensor(const Tensor&)>& between, DType* handed) {
    Tensor x = ops::scale(x0, 1.0f);
    x.set_requires_grad();
    const Tensor gate = between(ops::linear(x, w_gate)), up = between(ops::linear(x, w_up));
    const Tensor y = ops::swiglu(gate, up);
    *handed = y.grad_fn()->backward(*y.grad_fn(), upstream)[0].dtype();
    autograd::backward(ops::sum(ops::mul(y, upstream)));
    return x.grad().to_floats();
  };
  DType direct_dtype{}, later_dtype{};
  const auto direct = input_gradient([](const Tensor& t) { return t; }, &direct_dtype);
  const auto rounded_later = input_gradient([](const Tensor& t) { return ops::scale(t, 1.0f); }, &later_dtype);
  EXPECT_EQ(direct_dtype, DType::bf16);
  EXPECT_EQ(later_dtype, DType::f32);
  EXPECT_EQ(direct, rounded_later);
}

}  // namespace
}  // namespace loracpp
