#pragma once
// The embeddable fine-tuning API: load a model, attach adapters, train them on text with a
// progress callback, evaluate, save in PEFT's format, merge, generate. The `lora` command is a
// thin layer over this; examples/finetune.cpp uses nothing else.
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lora/lora_config.h"
#include "models/sampler.h"
#include "train/trainer.h"

namespace loracpp {

namespace models {
class LlamaModel;
struct LoadedModel;
}  // namespace models
namespace tokenizers {
class Tokenizer;
}

class FineTuner {
 public:
  // A HuggingFace folder, a .gguf file or a llama2.c .bin (with its tokenizer beside it).
  static FineTuner load(const std::filesystem::path& model, const std::filesystem::path& tokenizer = {});
  FineTuner(FineTuner&&) noexcept;
  FineTuner& operator=(FineTuner&&) noexcept;
  ~FineTuner();

  // A fresh adapter (B = 0: the model's output is unchanged until it trains).
  void add_adapter(const std::string& name, const lora::LoraConfig& config, std::uint64_t seed = 0);
  // A PEFT adapter folder, applied with weight `scale`.
  void load_adapter(const std::string& name, const std::filesystem::path& folder, float scale = 1.0f);
  void save_adapter(const std::string& name, const std::filesystem::path& folder) const;
  const lora::LoraConfig& adapter_config(const std::string& name) const;
  std::int64_t trainable_parameters(const std::string& name) const;

  // Trains adapter `name` on documents; validation documents (may be empty) are evaluated every
  // options.eval_every steps and at the end. Checkpoints go under out (when save_every > 0).
  std::optional<train::EvalResult> train(const std::string& name, const std::vector<std::string>& documents,
                                         const std::vector<std::string>& validation, std::int64_t seq_len,
                                         const train::TrainOptions& options,
                                         const std::function<void(const train::TrainEvent&)>& on_event = {},
                                         const std::filesystem::path& out = {});
  train::EvalResult evaluate(const std::vector<std::string>& documents, std::int64_t seq_len,
                             std::int64_t batch_size = 8) const;
  // Folds the adapter into the weights (safe mode refuses non-finite results).
  void merge(const std::string& name, bool safe = true);
  // Writes the model with everything merged so far, as a HuggingFace folder ("hf") or GGUF file.
  void save_model(const std::filesystem::path& out, const std::string& format = "hf") const;
  std::string generate(const std::string& prompt, std::int64_t steps, const models::SamplerOptions& sampler = {}) const;

  models::LlamaModel& model();
  const tokenizers::Tokenizer& tokenizer() const;

 private:
  FineTuner();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace loracpp
