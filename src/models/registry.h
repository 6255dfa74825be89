#pragma once
// Loads any supported model file or folder: the file format decides the reader, and the
// architecture it names (config.json's architectures / model_type, GGUF's general.architecture)
// decides the builder. An unknown architecture is refused with the list of supported ones.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models/llama.h"
#include "tokenizers/tokenizer.h"

namespace loracpp::models {

struct LoadOptions {
  std::filesystem::path tokenizer;  // overrides the one found next to the model
};

struct LoadedModel {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<tokenizers::Tokenizer> tokenizer;  // null when none was found
  std::string format;                                // "hf", "gguf" or "llama2c"
};

LoadedModel load_model(const std::filesystem::path& path, const LoadOptions& options = {});

struct Architecture {
  std::string_view architecture;  // HuggingFace class name
  std::string_view model_type;    // config.json model_type, GGUF general.architecture
};
const std::vector<Architecture>& supported_architectures();
// Resolves architecture/model_type; throws listing the supported ones.
const Architecture& find_architecture(std::string_view architecture, std::string_view model_type,
                                      const std::string& source);

}  // namespace loracpp::models
