#pragma once
// How the Llama family maps onto GGUF as llama.cpp reads it: tensor names, metadata keys, and the
// rotary row order each GGUF architecture expects.
#include <string>

#include "io/gguf.h"
#include "models/llama.h"
#include "tokenizers/llama2c_tokenizer.h"

namespace loracpp::models {

struct GgufArch {
  std::string name;          // general.architecture
  ops::RopeLayout rope_layout;  // llama: interleaved; qwen2: half (NeoX)
};
GgufArch gguf_arch_for(const std::string& model_type);

std::string gguf_tensor_name(const std::string& hf_name);
// Throws naming the file for a tensor that is not part of the Llama family.
std::string hf_tensor_name(const std::string& gguf_name, const std::string& file);

std::vector<std::pair<std::string, io::GgufValue>> gguf_metadata(const LlamaConfig& config, const GgufArch& arch);
LlamaConfig config_from_gguf(const io::GgufFile& gguf, const std::string& file);

// SentencePiece-style vocabularies (tokenizer.ggml.model = "llama") to and from GGUF metadata.
void add_gguf_tokenizer(std::vector<std::pair<std::string, io::GgufValue>>& metadata,
                        const tokenizers::Llama2cTokenizer& tokenizer);
std::unique_ptr<tokenizers::Llama2cTokenizer> tokenizer_from_gguf(const io::GgufFile& gguf, const std::string& file);

}  // namespace loracpp::models
