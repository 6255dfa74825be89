#include "autograd/backward.h"
#include "core/random.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "models/registry.h"
#include "ops/tape.h"
#include "test_util.h"
#include "train/optimizer.h"

namespace loracpp::lora {
namespace {

using models::LlamaModel;

std::unique_ptr<LlamaModel> base_model() { return std::move(models::load_model(testing::fixture_path("llama/llama_gqa")).model); }

const Tensor kIds = Tensor::from_ints(std::vector<std::int64_t>{1, 5, 9, 2, 33, 7, 12, 3, 3, 8, 21, 0, 39, 4}, {2, 7});

std::vector<float> logits(const LlamaModel& model) {
  autograd::NoGradGuard no_grad;
  return model.forward(kIds).to_floats();
}

// Gives every B random values so the adapter changes the output.
void randomise_b(LlamaModel& model, const std::string& name, std::uint64_t seed) {
  Rng rng(seed);
  for (auto& [module, branches] : model.mutable_adapters())
    for (auto& b : branches)
      if (b.adapter == name) b.b = randn(b.b.shape(), rng, DType::f32, 0.2f);
}

LoraConfig config_for(std::vector<std::string> targets, std::int64_t r = 4, float alpha = 8) {
  LoraConfig c;
  c.r = r;
  c.lora_alpha = alpha;
  c.target_modules = std::move(targets);
  return c;
}

TEST(Adapter, FreshAdapterChangesNothing) {
  auto model = base_model();
  const auto before = logits(*model);
  attach_adapter(*model, "default", config_for({"q_proj", "v_proj"}), 1);
  EXPECT_EQ(logits(*model), before);
}

TEST(Adapter, TrainableParametersAreExactlyRTimesInPlusOut) {
  auto model = base_model();
  const auto config = config_for({"q_proj", "k_proj", "v_proj", "o_proj"}, 8, 16);
  attach_adapter(*model, "default", config, 1);
  std::int64_t expected = 0;
  for (const auto& m : model->linear_modules())
    if (config.targets(m)) expected += 8 * (m.in_features + m.out_features);
  std::int64_t count = 0;
  std::vector<Tensor> params;
  for (const auto& p : adapter_parameters(*model, "default", config)) {
    count += p.tensor.numel();
    params.push_back(p.tensor);
  }
  EXPECT_EQ(count, expected);
  // AdamW keeps two moments per trainable parameter and nothing for the frozen base.
  train::AdamW optimizer(params, {});
  std::int64_t state = 0;
  for (const auto& m : optimizer.first_moments()) state += m.numel();
  for (const auto& v : optimizer.second_moments()) state += v.numel();
  EXPECT_EQ(state, 2 * expected);
  // Only adapters receive gradients.
  autograd::backward(model->loss(kIds));
  for (const auto& [name, w] : model->weights()) EXPECT_FALSE(w.grad().defined()) << name;
  for (const auto& p : params) EXPECT_TRUE(p.grad().defined());
}

TEST(Adapter, TargetSelectionFollowsPeft) {
  auto count = [](const LoraConfig& c) {
    auto model = base_model();
    attach_adapter(*model, "x", c, 1);
    std::map<std::string, std::int64_t> ranks;
    for (const auto& [module, branches] : model->adapters())
      for (const auto& b : branches) ranks[module] = b.rank();
    return ranks;
  };
  EXPECT_EQ(count(config_for({"q_proj"})).size(), 2u);  // one per layer
  LoraConfig all = config_for({});
  all.all_linear = true;
  EXPECT_EQ(count(all).size(), 14u);  // 7 per layer, not lm_head
  LoraConfig regex = config_for({});
  regex.target_regex = R"(.*\.layers\.1\..*_proj)";
  EXPECT_EQ(count(regex).size(), 7u);
  LoraConfig layers = config_for({"q_proj", "down_proj"});
  layers.layers_to_transform = {1};
  layers.rank_pattern = {{"down_proj", 2}};
  const auto r = count(layers);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.at("model.layers.1.self_attn.q_proj"), 4);
  EXPECT_EQ(r.at("model.layers.1.mlp.down_proj"), 2);
  LoraConfig rs = config_for({"q_proj"}, 16, 8);
  rs.use_rslora = true;
  EXPECT_FLOAT_EQ(rs.scale_for("model.layers.0.self_attn.q_proj"), 2.0f);  // 8 / sqrt(16)
  EXPECT_TRUE(testing::throws_with_prefix([&] { count(config_for({"qkv"})); }, "[lora] target_modules matched no module"));
}

TEST(Adapter, PeftRoundTripKeepsTheLogits) {
  auto model = base_model();
  LoraConfig config = config_for({"q_proj", "v_proj", "embed_tokens"});
  attach_adapter(*model, "default", config, 3);
  randomise_b(*model, "default", 4);
  const auto adapted = logits(*model);
  testing::TempDir dir;
  save_peft_adapter(*model, "default", config, dir / "adapter");
  const auto json = nlohmann::json::parse(testing::read_text(dir / "adapter" / "adapter_config.json"));
  EXPECT_EQ(json["peft_type"], "LORA");
  EXPECT_EQ(json["task_type"], "CAUSAL_LM");
  EXPECT_EQ(json["r"], 4);
  const auto file = io::read_safetensors(dir / "adapter" / "adapter_model.safetensors");
  bool found = false;
  for (const auto& [name, t] : file.tensors)
    if (name == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") {
      found = true;
      EXPECT_EQ(t.shape(), (Shape{4, 16}));
    }
  EXPECT_TRUE(found);
  auto fresh = base_model();
  load_peft_adapter(*fresh, "default", dir / "adapter");
  EXPECT_EQ(logits(*fresh), adapted);
}

TEST(Adapter, LoadsAnAdapterWrittenInPeftFormatByAnotherTool) {
  auto model = base_model();
  const auto config = load_peft_adapter(*model, "peft", testing::fixture_path("lora/peft_adapter"));
  EXPECT_EQ(config.rank_for("model.layers.0.mlp.down_proj"), 2);
  const auto expected = testing::load_fixture("lora/peft_adapter_expected.json");
  std::vector<std::int64_t> ids;
  for (const auto& row : expected["ids"])
    for (const auto& id : row) ids.push_back(id.get<std::int64_t>());
  autograd::NoGradGuard no_grad;
  const auto got = model->forward(Tensor::from_ints(ids, {2, 7})).to_floats();
  const auto want = expected["logits"].get<std::vector<double>>();
  EXPECT_TRUE(testing::all_close(got, want, 1e-4 * testing::max_abs(want), 1e-4));
}

TEST(Adapter, MergeMatchesTheAdapterAndUnmergeRestoresTheBase) {
  auto model = base_model();
  const auto base_logits = logits(*model);
  std::map<std::string, std::vector<float>> base_weights;
  for (const auto& [name, w] : model->weights()) base_weights[name] = w.to_floats();
  load_peft_adapter(*model, "peft", testing::fixture_path("lora/peft_adapter"));
  const auto adapted = logits(*model);
  merge_adapter(*model, "peft");
  EXPECT_TRUE(testing::all_close(logits(*model), adapted, 1e-5 * testing::max_abs(std::vector<double>(adapted.begin(), adapted.end())), 1e-5));
  unmerge_adapter(*model, "peft");
  for (const auto& [name, w] : model->weights())
    EXPECT_TRUE(testing::all_close(w.to_floats(), base_weights[name], 1e-6, 1e-6)) << name;
  EXPECT_TRUE(testing::all_close(logits(*model), adapted, 1e-5, 1e-5));  // the branch applies again
  remove_adapter(*model, "peft");
  EXPECT_TRUE(testing::all_close(logits(*model), base_logits, 1e-5, 1e-5));
}

TEST(Adapter, SafeMergeRefusesNonFiniteWeightsAndChangesNothing) {
  auto model = base_model();
  attach_adapter(*model, "bad", config_for({"q_proj"}), 1);
  auto& branch = model->mutable_adapters().at("model.layers.1.self_attn.q_proj").at(0);
  branch.b = Tensor::full(branch.b.shape(), std::numeric_limits<float>::infinity());
  const auto before = model->weight("model.layers.0.self_attn.q_proj.weight").to_floats();
  EXPECT_TRUE(testing::throws_with_prefix([&] { merge_adapter(*model, "bad", true); },
                                          "[lora] merging adapter 'bad' makes model.layers.1.self_attn.q_proj.weight non-finite"));
  EXPECT_EQ(model->weight("model.layers.0.self_attn.q_proj.weight").to_floats(), before);
}

TEST(Adapter, SeveralAdaptersScaleAndCombine) {
  auto model = base_model();
  attach_adapter(*model, "a", config_for({"q_proj", "v_proj"}), 1);
  attach_adapter(*model, "b", config_for({"v_proj", "down_proj"}, 2, 4), 2);
  randomise_b(*model, "a", 10);
  randomise_b(*model, "b", 11);
  for (auto& [module, branches] : model->mutable_adapters())
    for (auto& br : branches) br.weight = br.adapter == "a" ? 0.5f : 2.0f;
  const auto both = logits(*model);
  const LoraConfig combined = combine_adapters(*model, {"a", "b"}, {0.5f, 2.0f}, "ab");
  const std::set<std::string> only_ab{"ab"};
  autograd::NoGradGuard no_grad;
  const auto via_combined = model->forward(kIds, nullptr, false, {.active = &only_ab}).to_floats();
  EXPECT_TRUE(testing::all_close(via_combined, both, 1e-5, 1e-5));
  EXPECT_EQ(combined.rank_for("model.layers.0.self_attn.v_proj"), 6);
  EXPECT_EQ(combined.rank_for("model.layers.0.self_attn.q_proj"), 4);
}

// The training loss runs the output layer fused with the cross-entropy, in chunks; an adapter on
// the output layer takes the plain path. Both must give what forward + cross_entropy give.
TEST(Adapter, TokenLossEqualsTheLossOfTheLogitsWithTheSameGradients) {
  for (const auto& targets_list : {std::vector<std::string>{"q_proj", "v_proj"}, std::vector<std::string>{"lm_head"}}) {
    auto model = base_model();
    const auto config = config_for(targets_list);
    attach_adapter(*model, "default", config, 1);
    randomise_b(*model, "default", 2);
    const Tensor inputs = ops::slice(kIds, 1, 0, 6), targets = ops::contiguous(ops::slice(kIds, 1, 1, 7));
    auto loss_and_grads = [&](bool fused) {
      const auto params = adapter_parameters(*model, "default", config);
      for (auto p : params) p.tensor.set_grad(Tensor());
      const Tensor loss = fused ? model->token_loss(ops::contiguous(inputs), targets)
                                : ops::cross_entropy(model->forward(ops::contiguous(inputs)), targets);
      autograd::backward(loss);
      std::vector<float> out{loss.item()};
      for (const auto& p : params) {
        const auto g = p.tensor.grad().to_floats();
        out.insert(out.end(), g.begin(), g.end());
      }
      return out;
    };
    const auto fused = loss_and_grads(true), plain = loss_and_grads(false);
    ASSERT_EQ(fused.size(), plain.size());
    for (std::size_t i = 0; i < fused.size(); ++i) ASSERT_NEAR(fused[i], plain[i], 1e-5f) << targets_list[0] << " " << i;
  }
}

TEST(AdapterErrors, MalformedConfigsAreRefused) {
  testing::TempDir dir;
  std::filesystem::copy(testing::fixture_path("lora/peft_adapter"), dir / "a");
  const auto config_path = (dir / "a" / "adapter_config.json").string();
  auto json = nlohmann::json::parse(testing::read_text(config_path));
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    auto broken = json;
    broken[key] = value;
    testing::write_text(config_path, broken.dump());
    auto model = base_model();
    return [model = std::shared_ptr<LlamaModel>(std::move(model)), &dir] { load_peft_adapter(*model, "x", dir / "a"); };
  };
  EXPECT_TRUE(testing::throws_with_prefix(with("r", "eight"), "[lora] field 'r' must be a positive integer, got \"eight\" (" + config_path + ")"));
  EXPECT_TRUE(testing::throws_with_prefix(with("use_dora", true), "[lora] field 'use_dora' = true is not supported"));
  EXPECT_TRUE(testing::throws_with_prefix(with("lora_rank", 8), "[lora] unknown field 'lora_rank'"));
  EXPECT_TRUE(testing::throws_with_prefix(with("r", 8), "[lora] module 'model.embed_tokens' needs A [8, 40]"));
  testing::write_text(config_path, "{\"r\": ");
  auto model = base_model();
  EXPECT_TRUE(testing::throws_with_prefix([&] { load_peft_adapter(*model, "x", dir / "a"); },
                                          "[lora] " + config_path + " is not valid JSON"));
}

TEST(AdapterErrors, AdapterForAnotherBaseIsRefused) {
  auto other = models::load_model(testing::fixture_path("llama/smollm_tied"));  // 4 kv heads: k/v shapes differ
  EXPECT_TRUE(testing::throws_with_prefix([&] { load_peft_adapter(*other.model, "x", testing::fixture_path("lora/peft_adapter")); },
                                          "[lora] module 'model.layers.0.self_attn.v_proj' needs A [4, 16] and B [16, 4]"));
  EXPECT_TRUE(other.model->adapters().empty());
}

}  // namespace
}  // namespace loracpp::lora
