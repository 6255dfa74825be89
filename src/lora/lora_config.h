#pragma once
// LoraConfig: PEFT's LoRA options, read from and written to adapter_config.json as PEFT does.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/llama.h"

namespace loracpp::lora {

struct LoraConfig {
  std::int64_t r = 8;
  float lora_alpha = 8.0f;
  float lora_dropout = 0.0f;
  std::vector<std::string> target_modules{"q_proj", "v_proj"};  // names, each matching a path suffix
  std::string target_regex;                   // instead of names: a regex the whole module path must match
  bool all_linear = false;                    // "all-linear": every linear layer but the output layer
  std::vector<std::int64_t> layers_to_transform;  // empty: all layers
  std::map<std::string, std::int64_t> rank_pattern;  // module pattern -> r
  std::map<std::string, float> alpha_pattern;        // module pattern -> alpha
  bool use_rslora = false;                    // scale = alpha / sqrt(r) instead of alpha / r
  std::string init_lora_weights = "default";  // default (Kaiming-uniform A, zero B) or gaussian
  std::string bias = "none";                  // none, lora_only, all
  std::vector<std::string> modules_to_save;   // modules trained in full and saved with the adapter
  std::string task_type = "CAUSAL_LM";
  std::string base_model_name_or_path;

  // PEFT's adapter_config.json. Keys PEFT writes that do not change a LoRA adapter are accepted;
  // unknown keys and options we cannot honour (use_dora, fan_in_fan_out, ...) are refused.
  static LoraConfig from_json(const nlohmann::json& json, const std::string& file);
  nlohmann::ordered_json to_json() const;

  bool targets(const models::LinearModule& module) const;
  std::int64_t rank_for(const std::string& module_path) const;
  float alpha_for(const std::string& module_path) const;
  float scale_for(const std::string& module_path) const;
  void validate(const std::string& source) const;  // source: the file or flag set, named in errors
};

}  // namespace loracpp::lora
