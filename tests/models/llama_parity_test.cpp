// Llama-family models against the PyTorch reference (tests/fixtures/llama, made by
// tools/make_llama_fixtures.py): logits, loss and the gradient of every weight, for grouped-query
// attention, tied and untied output layers, Qwen2 biases, Llama-3 rope scaling and Mistral; and
// the same weights through GGUF and back.
#include "autograd/backward.h"
#include "models/convert.h"
#include "models/registry.h"
#include "ops/tape.h"
#include "test_util.h"

namespace loracpp::models {
namespace {

const std::vector<std::string> kVariants = {"llama_gqa", "smollm_tied", "qwen2_bias", "llama3_scaled", "mistral"};

Tensor ids_of(const nlohmann::json& ref) {
  std::vector<std::int64_t> ids;
  for (const auto& row : ref["ids"])
    for (const auto& id : row) ids.push_back(id.get<std::int64_t>());
  return Tensor::from_ints(ids, {static_cast<std::int64_t>(ref["ids"].size()), static_cast<std::int64_t>(ref["ids"][0].size())});
}

std::vector<float> logits_of(const LlamaModel& model, const Tensor& ids) {
  autograd::NoGradGuard no_grad;
  return model.forward(ids).to_floats();
}

class LlamaParity : public ::testing::TestWithParam<std::string> {
 protected:
  std::string folder() const { return testing::fixture_path("llama/" + GetParam()); }
  nlohmann::json reference() const { return testing::load_fixture("llama/" + GetParam() + "/reference.json"); }
};

TEST_P(LlamaParity, LogitsLossAndEveryGradientMatchTorch) {
  const auto ref = reference();
  auto loaded = load_model(folder());
  LlamaModel& model = *loaded.model;
  const Tensor ids = ids_of(ref);
  const auto want = ref["logits"].get<std::vector<double>>();
  const double scale = testing::max_abs(want);
  EXPECT_TRUE(testing::all_close(logits_of(model, ids), want, 1e-4 * scale, 1e-4));

  for (auto& [name, weight] : model.mutable_weights()) weight.set_requires_grad();
  const Tensor loss = model.loss(ids);
  EXPECT_NEAR(loss.item(), ref["loss"].get<double>(), 1e-4 * ref["loss"].get<double>());
  autograd::backward(loss);
  ASSERT_EQ(ref["grads"].size(), model.weights().size());
  for (const auto& [name, grad] : ref["grads"].items()) {
    const Tensor& weight = model.weight(name);
    ASSERT_TRUE(weight.grad().defined()) << name;
    const auto g = grad.get<std::vector<double>>();
    EXPECT_TRUE(testing::all_close(weight.grad().to_floats(), g, 1e-4 * std::max(1e-3, testing::max_abs(g)), 1e-4))
        << name;
  }
}

TEST_P(LlamaParity, KvCacheDecodingEqualsTheFullForwardPass) {
  auto loaded = load_model(folder());
  const LlamaModel& model = *loaded.model;
  const Tensor ids = ids_of(reference());
  const auto full = logits_of(model, ids);
  autograd::NoGradGuard no_grad;
  KVCache cache = model.make_cache(ids.size(0), ids.size(1));
  std::vector<std::vector<float>> steps;
  // The first three positions at once, then one at a time.
  steps.push_back(model.forward(ops::contiguous(ops::slice(ids, 1, 0, 3)), &cache).to_floats());
  for (std::int64_t t = 3; t < ids.size(1); ++t)
    steps.push_back(model.forward(ops::contiguous(ops::slice(ids, 1, t, t + 1)), &cache).to_floats());
  const std::int64_t batch = ids.size(0), seq = ids.size(1), vocab = model.config().vocab_size;
  std::vector<float> stitched(full.size());
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < seq; ++t) {
      const auto& part = t < 3 ? steps[0] : steps[static_cast<std::size_t>(t - 2)];
      const std::int64_t len = t < 3 ? 3 : 1, at = t < 3 ? t : 0;
      std::copy_n(part.begin() + (b * len + at) * vocab, vocab, stitched.begin() + (b * seq + t) * vocab);
    }
  EXPECT_TRUE(testing::all_close(stitched, full, 1e-5, 1e-5));
}

TEST_P(LlamaParity, GgufRoundTripGivesTheSameLogits) {
  auto loaded = load_model(folder());
  testing::TempDir dir;
  const auto path = dir / "model.gguf";
  if (loaded.model->config().rope_scaling) {
    EXPECT_TRUE(testing::throws_with_prefix([&] { save_model(*loaded.model, nullptr, path, "gguf", DType::f32); },
                                            "[gguf] Llama-3 rope scaling is not written to GGUF yet"));
    EXPECT_FALSE(std::filesystem::exists(path));
    return;
  }
  save_model(*loaded.model, nullptr, path, "gguf", DType::f32);
  auto from_gguf = load_model(path);
  EXPECT_EQ(from_gguf.format, "gguf");
  const Tensor ids = ids_of(reference());
  EXPECT_TRUE(testing::all_close(logits_of(*from_gguf.model, ids), logits_of(*loaded.model, ids), 1e-5, 1e-5));
  // And back to a HuggingFace folder: the very same bits.
  save_model(*from_gguf.model, nullptr, dir / "hf", "hf", DType::f32);
  auto back = load_model(dir / "hf");
  for (const auto& [name, weight] : loaded.model->weights())
    EXPECT_EQ(back.model->weight(name).to_floats(), weight.to_floats()) << name;
}

TEST_P(LlamaParity, Bf16ConversionStaysWithinBf16Tolerance) {
  auto loaded = load_model(folder());
  testing::TempDir dir;
  save_model(*loaded.model, nullptr, dir / "bf16", "hf", DType::bf16);
  auto half = load_model(dir / "bf16");
  EXPECT_EQ(half.model->weight("model.norm.weight").dtype(), DType::bf16);
  const Tensor ids = ids_of(reference());
  const auto want = reference()["logits"].get<std::vector<double>>();
  EXPECT_TRUE(testing::all_close(logits_of(*half.model, ids), want, 0.05 * testing::max_abs(want), 0.0));
}

INSTANTIATE_TEST_SUITE_P(Variants, LlamaParity, ::testing::ValuesIn(kVariants));

}  // namespace
}  // namespace loracpp::models
