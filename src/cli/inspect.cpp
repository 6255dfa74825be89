// `lora inspect`: what a model is, how big, and which modules LoRA can target.
#include <fmt/core.h>

#include <fstream>
#include <map>

#include "cli/commands.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "lora/lora_config.h"
#include "models/registry.h"

namespace loracpp::cli {

void InspectCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("inspect", "Describe a model: architecture, sizes, LoRA target modules");
  app->add_option("model", model, "Model: HuggingFace folder, .gguf file or llama2.c .bin")->required();
}

namespace {
int inspect_adapter(const std::filesystem::path& dir) {
  const auto config_path = dir / "adapter_config.json";
  const auto config = lora::LoraConfig::from_json(io::read_json_file(config_path, "inspect"), config_path.string());
  const auto weights = io::read_safetensors(dir / "adapter_model.safetensors");
  std::int64_t params = 0, bytes = 0;
  for (const auto& [name, t] : weights.tensors) {
    params += t.numel();
    bytes += t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype()));
  }
  fmt::print("adapter:      {} (PEFT LoRA, task {})\n", dir.string(), config.task_type);
  fmt::print("base model:   {}\n", config.base_model_name_or_path);
  fmt::print("r {}  alpha {}  dropout {}  rslora {}  bias {}\n", config.r, config.lora_alpha, config.lora_dropout,
             config.use_rslora ? "yes" : "no", config.bias);
  fmt::print("targets:      {}\n", config.all_linear ? std::string("all-linear")
                                                     : !config.target_regex.empty() ? config.target_regex
                                                                                    : fmt::format("{}", fmt::join(config.target_modules, ", ")));
  fmt::print("tensors:      {}  parameters {}  ({} bytes)\n", weights.tensors.size(), params, bytes);
  return 0;
}
}  // namespace

int InspectCommand::run() {
  if (std::filesystem::exists(std::filesystem::path(model) / "adapter_config.json")) return inspect_adapter(model);
  const auto loaded = models::load_model(model);
  const auto& c = loaded.model->config();
  fmt::print("model:        {} ({} format)\n", model, loaded.format);
  fmt::print("architecture: {} (model_type {})\n", c.architecture, c.model_type);
  fmt::print("layers {}  hidden {}  intermediate {}  heads {}  kv_heads {}  head_dim {}\n", c.num_layers,
             c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim);
  fmt::print("vocab {}  context {}  rms_norm_eps {}  rope_theta {}{}  tied embeddings {}  attention bias {}\n",
             c.vocab_size, c.max_position_embeddings, c.rms_norm_eps, c.rope_theta,
             c.rope_scaling ? fmt::format(" (llama3 scaling x{})", c.rope_scaling->factor) : "",
             c.tie_word_embeddings ? "yes" : "no", c.attention_bias ? "yes" : "no");
  std::map<std::string, std::int64_t> by_dtype;
  std::int64_t total = 0;
  for (const auto& [name, tensor] : loaded.model->weights()) {
    by_dtype[std::string(dtype_name(tensor.dtype()))] += tensor.numel();
    total += tensor.numel();
  }
  fmt::print("parameters:   {}", total);
  for (const auto& [dtype, count] : by_dtype) fmt::print("  ({} {})", count, dtype);
  fmt::print("\ntokenizer:    {}\n", loaded.tokenizer ? "found" : "none found");
  fmt::print("LoRA targets: {} (in each of the {} layers)\n", fmt::join(models::LlamaModel::target_modules(), ", "),
             c.num_layers);
  return 0;
}

}  // namespace loracpp::cli
