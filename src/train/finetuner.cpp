#include "loracpp/finetuner.h"

#include <map>

#include "lora/adapter.h"
#include "models/convert.h"
#include "models/generate.h"
#include "models/registry.h"

namespace loracpp {

struct FineTuner::State {
  models::LoadedModel loaded;
  std::map<std::string, lora::LoraConfig> configs;
};

FineTuner::FineTuner() : state_(std::make_unique<State>()) {}
FineTuner::FineTuner(FineTuner&&) noexcept = default;
FineTuner& FineTuner::operator=(FineTuner&&) noexcept = default;
FineTuner::~FineTuner() = default;

FineTuner FineTuner::load(const std::filesystem::path& model, const std::filesystem::path& tokenizer) {
  FineTuner t;
  t.state_->loaded = models::load_model(model, {.tokenizer = tokenizer});
  return t;
}

models::LlamaModel& FineTuner::model() { return *state_->loaded.model; }

const tokenizers::Tokenizer& FineTuner::tokenizer() const {
  check(state_->loaded.tokenizer != nullptr, "finetuner", "no tokenizer was found for {}",
        state_->loaded.model->source());
  return *state_->loaded.tokenizer;
}

void FineTuner::add_adapter(const std::string& name, const lora::LoraConfig& config, std::uint64_t seed) {
  lora::attach_adapter(*state_->loaded.model, name, config, seed);
  state_->configs[name] = config;
}

void FineTuner::load_adapter(const std::string& name, const std::filesystem::path& folder, float scale) {
  state_->configs[name] = lora::load_peft_adapter(*state_->loaded.model, name, folder, scale);
}

const lora::LoraConfig& FineTuner::adapter_config(const std::string& name) const {
  const auto it = state_->configs.find(name);
  check(it != state_->configs.end(), "finetuner", "no adapter named '{}'", name);
  return it->second;
}

void FineTuner::save_adapter(const std::string& name, const std::filesystem::path& folder) const {
  lora::save_peft_adapter(*state_->loaded.model, name, adapter_config(name), folder);
}

std::int64_t FineTuner::trainable_parameters(const std::string& name) const {
  std::int64_t count = 0;
  for (const auto& p : lora::adapter_parameters(*state_->loaded.model, name, adapter_config(name))) count += p.tensor.numel();
  return count;
}

std::optional<train::EvalResult> FineTuner::train(const std::string& name, const std::vector<std::string>& documents,
                                                  const std::vector<std::string>& validation, std::int64_t seq_len,
                                                  const train::TrainOptions& options,
                                                  const std::function<void(const train::TrainEvent&)>& on_event,
                                                  const std::filesystem::path& out) {
  const data::TokenDataset train_set(documents, tokenizer(), seq_len, "training documents");
  std::optional<data::TokenDataset> validation_set;
  if (!validation.empty()) validation_set.emplace(validation, tokenizer(), seq_len, "validation documents");
  train::Trainer trainer(*state_->loaded.model, lora::adapter_parameters(*state_->loaded.model, name, adapter_config(name)),
                         train_set, validation_set ? &*validation_set : nullptr, options,
                         adapter_config(name).to_json().dump(), out.empty() ? std::filesystem::path(".") : out);
  return trainer.run(on_event ? on_event : [](const train::TrainEvent&) {});
}

train::EvalResult FineTuner::evaluate(const std::vector<std::string>& documents, std::int64_t seq_len,
                                      std::int64_t batch_size) const {
  const data::TokenDataset set(documents, tokenizer(), seq_len, "evaluation documents");
  return train::evaluate(*state_->loaded.model, set, batch_size);
}

void FineTuner::merge(const std::string& name, bool safe) { lora::merge_adapter(*state_->loaded.model, name, safe); }

void FineTuner::save_model(const std::filesystem::path& out, const std::string& format) const {
  models::save_model(*state_->loaded.model, state_->loaded.tokenizer.get(), out, format,
                     state_->loaded.model->dtype());
}

std::string FineTuner::generate(const std::string& prompt, std::int64_t steps,
                                const models::SamplerOptions& sampler) const {
  std::string text;
  models::generate(*state_->loaded.model, tokenizer(), prompt, {steps, sampler},
                   [&](const std::string& piece) { text += piece; });
  return text;
}

}  // namespace loracpp
