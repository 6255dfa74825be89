#include "models/registry.h"
#include "io/json_file.h"

#include <fstream>

#include "io/gguf.h"
#include "io/llama2c.h"
#include "models/gguf_names.h"
#include "io/safetensors.h"
#include "tokenizers/tokenizer_json.h"
#include "tokenizers/llama2c_tokenizer.h"

namespace loracpp::models {

namespace {

std::map<std::string, Tensor> to_map(std::vector<std::pair<std::string, Tensor>> tensors, const std::string& source) {
  std::map<std::string, Tensor> out;
  for (auto& [name, tensor] : tensors)
    check(out.emplace(name, tensor).second, "model", "tensor '{}' appears twice ({})", name, source);
  return out;
}

std::unique_ptr<tokenizers::Tokenizer> find_llama2c_tokenizer(const std::filesystem::path& dir,
                                                              const LoadOptions& options, std::int64_t vocab) {
  std::filesystem::path path = options.tokenizer;
  if (path.empty()) {
    for (const auto& name : {std::string("tokenizer.bin"), fmt::format("tok{}.bin", vocab)})
      if (std::filesystem::exists(dir / name)) {
        path = dir / name;
        break;
      }
  }
  if (path.empty()) return nullptr;
  return std::make_unique<tokenizers::Llama2cTokenizer>(tokenizers::Llama2cTokenizer::load(path, vocab));
}

LoadedModel load_hf_folder(const std::filesystem::path& folder, const LoadOptions& options) {
  const auto config_path = folder / "config.json";
  check(std::filesystem::exists(config_path), "model", "{} has no config.json", folder.string());
  const nlohmann::json json = io::read_json_file(config_path, "config");
  const std::string architecture = json.contains("architectures") && json["architectures"].is_array() &&
                                           !json["architectures"].empty() && json["architectures"][0].is_string()
                                       ? json["architectures"][0].get<std::string>()
                                       : "";
  const std::string model_type = json.value("model_type", std::string());
  find_architecture(architecture, model_type, config_path.string());
  LlamaConfig config = LlamaConfig::from_hf_json(json, config_path.string());
  auto weights = io::read_safetensors_folder(folder);
  LoadedModel loaded;
  loaded.format = "hf";
  loaded.model = std::make_unique<LlamaModel>(config, to_map(std::move(weights.tensors), folder.string()), folder.string());
  loaded.tokenizer = find_llama2c_tokenizer(folder, options, config.vocab_size);
  if (!loaded.tokenizer && options.tokenizer.empty() && std::filesystem::exists(folder / "tokenizer.json"))
    loaded.tokenizer = tokenizers::load_tokenizer_json(folder);
  return loaded;
}

LoadedModel load_llama2c(const std::filesystem::path& path, const LoadOptions& options) {
  auto checkpoint = io::read_llama2c(path);
  const auto& h = checkpoint.header;
  LlamaConfig config;
  config.vocab_size = h.vocab_size;
  config.hidden_size = h.dim;
  config.intermediate_size = h.hidden_dim;
  config.num_layers = h.n_layers;
  config.num_heads = h.n_heads;
  config.num_kv_heads = h.n_kv_heads;
  config.head_dim = h.dim / h.n_heads;
  config.max_position_embeddings = h.seq_len;
  config.rms_norm_eps = 1e-5f;
  config.tie_word_embeddings = h.shared_classifier;
  config.rope_layout = ops::RopeLayout::interleaved;
  LoadedModel loaded;
  loaded.format = "llama2c";
  loaded.model = std::make_unique<LlamaModel>(config, to_map(std::move(checkpoint.tensors), path.string()), path.string());
  loaded.tokenizer = find_llama2c_tokenizer(path.parent_path(), options, config.vocab_size);
  return loaded;
}

LoadedModel load_gguf(const std::filesystem::path& path, const LoadOptions& options) {
  const std::string file = path.string();
  const io::GgufFile gguf = io::read_gguf(path);
  const auto& arch = gguf.require("general.architecture", file);
  check(arch.is_string(), "gguf", "metadata 'general.architecture' must be a string ({})", file);
  find_architecture("", arch.get<std::string>(), file);
  const LlamaConfig config = config_from_gguf(gguf, file);
  std::map<std::string, Tensor> weights;
  for (const auto& [name, tensor] : gguf.tensors) {
    if (name == "rope_freqs.weight") fail("gguf", "tensor 'rope_freqs.weight' (scaled rotary frequencies) is not supported yet ({})", file);
    check(weights.emplace(hf_tensor_name(name, file), tensor).second, "gguf", "tensor '{}' appears twice ({})", name, file);
  }
  LoadedModel loaded;
  loaded.format = "gguf";
  loaded.model = std::make_unique<LlamaModel>(config, std::move(weights), file);
  if (options.tokenizer.empty()) {
    loaded.tokenizer = tokenizer_from_gguf(gguf, file);
  } else {
    loaded.tokenizer = find_llama2c_tokenizer(path.parent_path(), options, config.vocab_size);
  }
  return loaded;
}

}  // namespace

const std::vector<Architecture>& supported_architectures() {
  static const std::vector<Architecture> list = {
      {"LlamaForCausalLM", "llama"}, {"MistralForCausalLM", "mistral"}, {"Qwen2ForCausalLM", "qwen2"}};
  return list;
}

const Architecture& find_architecture(std::string_view architecture, std::string_view model_type,
                                      const std::string& source) {
  std::string known;
  for (const auto& a : supported_architectures()) {
    if ((!architecture.empty() && a.architecture == architecture) || (architecture.empty() && a.model_type == model_type))
      return a;
    known += fmt::format("{}{} ({})", known.empty() ? "" : ", ", a.architecture, a.model_type);
  }
  fail("model", "unsupported architecture '{}' (model_type '{}'); supported: {} ({})", architecture, model_type, known,
       source);
}

LoadedModel load_model(const std::filesystem::path& path, const LoadOptions& options) {
  check(std::filesystem::exists(path), "model", "{} does not exist", path.string());
  if (std::filesystem::is_directory(path)) return load_hf_folder(path, options);
  if (path.extension() == ".gguf") return load_gguf(path, options);
  if (io::looks_like_llama2c(path)) return load_llama2c(path, options);
  fail("model", "cannot tell the format of {}: expected a HuggingFace folder, a .gguf file or a llama2.c .bin",
       path.string());
}

}  // namespace loracpp::models
