// Gradient checkpointing (each decoder layer recomputed in the backward pass) changes memory, not
// results: on the real stories260K model, the loss and every trained tensor's gradient match those
// of the plain backward pass, with adapter dropout on (its masks must repeat), over two
// accumulated micro-batches, with the base in f32 and in bf16, and in full fine-tuning.
#include <map>
#include <string>
#include <vector>

#include "autograd/backward.h"
#include "core/random.h"
#include "lora/adapter.h"
#include "models/registry.h"
#include "ops/ops.h"
#include "ops/tape.h"
#include "test_util.h"
#include "train/stories_lora_run.h"

namespace loracpp {
namespace {

struct Run {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> grads;
};

enum class Trained { adapters, every_weight };

Run run(bool checkpointing, DType base, Trained trained) {
  const auto loaded = models::load_model(testing::shared_path("models/stories260K/stories260K.bin"));
  models::LlamaModel& model = *loaded.model;
  model.store_weights(base);
  std::map<std::string, Tensor> params;
  if (trained == Trained::adapters) {
    lora::LoraConfig config;
    config.r = 4;
    config.lora_alpha = 8;
    config.lora_dropout = 0.2f;
    config.all_linear = true;
    config.target_modules.clear();
    lora::attach_adapter(model, "default", config, 5);
    Rng rng(6);
    for (auto& [module, branches] : model.mutable_adapters()) {
      // B starts at zero, which would leave A without a gradient: give it values.
      autograd::NoGradGuard no_grad;
      Tensor& b = branches[0].b;
      ops::assign(b, randn(b.shape(), rng, DType::f32, 0.1f));
      branches[0].a.set_requires_grad();
      b.set_requires_grad();
      params[module + ".A"] = branches[0].a;
      params[module + ".B"] = b;
    }
  } else {
    for (auto& [name, w] : model.mutable_weights()) {
      w = ops::to_dtype(w, DType::f32);  // a trainable copy of the mapped file's values
      w.set_requires_grad();
      params[name] = w;
    }
  }
  Rng rng(7);
  Run out;
  for (std::uint64_t micro = 0; micro < 2; ++micro) {
    std::vector<std::int64_t> ids(2 * 24);
    for (auto& id : ids) id = static_cast<std::int64_t>(rng.next_u64() % 512);
    const nn::ForwardContext context{.training = true, .seed = 11 + micro, .gradient_checkpointing = checkpointing};
    const Tensor loss = model.loss(Tensor::from_ints(ids, {2, 24}), context);
    out.losses.push_back(loss.item());
    autograd::backward(loss);
  }
  for (const auto& [name, p] : params) {
    EXPECT_TRUE(p.grad().defined()) << name;
    if (p.grad().defined()) out.grads[name] = ops::to_dtype(p.grad(), DType::f32).to_floats();
  }
  return out;
}

void expect_same(const Run& plain, const Run& checkpointed) {
  ASSERT_EQ(plain.losses.size(), checkpointed.losses.size());
  for (std::size_t i = 0; i < plain.losses.size(); ++i)
    EXPECT_NEAR(checkpointed.losses[i], plain.losses[i], 1e-6 * std::abs(plain.losses[i])) << "micro-batch " << i;
  ASSERT_EQ(plain.grads.size(), checkpointed.grads.size());
  ASSERT_FALSE(plain.grads.empty());
  for (const auto& [name, want] : plain.grads) {
    const auto& got = checkpointed.grads.at(name);
    ASSERT_EQ(got.size(), want.size()) << name;
    double norm = 0;
    for (const float v : want) norm = std::max(norm, static_cast<double>(std::abs(v)));
    ASSERT_GT(norm, 0.0) << name << " has no gradient at all";
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-5 * norm + 1e-7) << name << " [" << i << "]";
  }
}

TEST(GradientCheckpointing, AdapterGradientsMatchThePlainBackwardPass) {
  expect_same(run(false, DType::f32, Trained::adapters), run(true, DType::f32, Trained::adapters));
}

TEST(GradientCheckpointing, AdapterGradientsMatchOnTheBf16Path) {
  expect_same(run(false, DType::bf16, Trained::adapters), run(true, DType::bf16, Trained::adapters));
}

TEST(GradientCheckpointing, FullFineTuningGradientsMatch) {
  expect_same(run(false, DType::f32, Trained::every_weight), run(true, DType::f32, Trained::every_weight));
}

// The trainer's option reaches the model (its layers are checkpointed) and gives the same loss
// curve, step for step.
TEST(GradientCheckpointing, TrainerOptionGivesTheSameLossCurve) {
  std::vector<double> plain, checkpointed;
  {
    autograd::TraceScope trace;
    plain = testing::stories_lora_losses(DType::f32, Device::cpu, 6);
    EXPECT_FALSE(trace.saw(ops::OpId::checkpoint));
  }
  {
    autograd::TraceScope trace;
    checkpointed = testing::stories_lora_losses(DType::f32, Device::cpu, 6, true);
    EXPECT_TRUE(trace.saw(ops::OpId::checkpoint));
  }
  ASSERT_EQ(plain.size(), 6u);
  ASSERT_EQ(checkpointed.size(), 6u);
  for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(checkpointed[i], plain[i], 1e-5 * plain[i]) << "step " << i + 1;
}

// Outside training the option changes nothing: no gradient recorded, no recomputation.
TEST(GradientCheckpointing, EvaluationIgnoresIt) {
  const auto loaded = models::load_model(testing::shared_path("models/stories260K/stories260K.bin"));
  autograd::NoGradGuard no_grad;
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{1, 403, 407, 261, 378, 432}, {1, 6});
  const auto plain = loaded.model->forward(ids).to_floats();
  const auto checkpointed = loaded.model->forward(ids, nullptr, false, {.gradient_checkpointing = true}).to_floats();
  EXPECT_EQ(plain, checkpointed);
}

}  // namespace
}  // namespace loracpp
