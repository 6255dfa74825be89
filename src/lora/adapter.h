#pragma once
// Adapters on a model: attach fresh ones from a LoraConfig, list what trains, save and load them
// in PEFT's format, merge them into the weights and back out, combine several into one.
#include <filesystem>
#include <string>
#include <vector>

#include "lora/lora_config.h"
#include "models/llama.h"

namespace loracpp::lora {

struct NamedParameter {
  std::string name;  // PEFT's key without the "base_model.model." prefix
  Tensor tensor;
};

// Adds adapter `name` to every module config targets (A initialised per init_lora_weights, B zero)
// and makes trainable what the config says (bias, modules_to_save). Throws when nothing matches.
void attach_adapter(models::LlamaModel& model, const std::string& name, const LoraConfig& config, std::uint64_t seed);
// Removes every branch of the adapter.
void remove_adapter(models::LlamaModel& model, const std::string& name);
std::vector<std::string> adapter_names(const models::LlamaModel& model);

// The adapter's parameters in a stable order, with requires_grad set: A and B of each branch, and
// the biases / saved modules its config makes trainable.
std::vector<NamedParameter> adapter_parameters(const models::LlamaModel& model, const std::string& name,
                                               const LoraConfig& config);

// PEFT's files in `folder`: adapter_model.safetensors and adapter_config.json, written atomically.
void save_peft_adapter(const models::LlamaModel& model, const std::string& name, const LoraConfig& config,
                       const std::filesystem::path& folder);
// Loads a PEFT adapter folder as adapter `name`, with user weight `weight`; checks every tensor's
// module and shape against the base. Returns its config.
LoraConfig load_peft_adapter(models::LlamaModel& model, const std::string& name, const std::filesystem::path& folder,
                             float weight = 1.0f);

// W += scale * B A for each branch of the adapter (the branch then stops applying). safe: refuse
// (changing nothing) when any merged weight would be non-finite.
void merge_adapter(models::LlamaModel& model, const std::string& name, bool safe = true);
// W -= scale * B A: the inverse of merge_adapter, exact up to f32 rounding.
void unmerge_adapter(models::LlamaModel& model, const std::string& name);

// A new adapter whose delta is sum_i weights[i] * delta_i, exactly, by concatenating ranks; returns
// the config that describes it (scale 1 on every module).
LoraConfig combine_adapters(models::LlamaModel& model, const std::vector<std::string>& names,
                      const std::vector<float>& weights, const std::string& combined);

}  // namespace loracpp::lora
