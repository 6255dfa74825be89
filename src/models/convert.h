#pragma once
// Writes a model in another format: a HuggingFace folder (config.json + model.safetensors) or a
// GGUF file. Rotary row order is converted as each format expects.
#include <filesystem>
#include <string>

#include "models/llama.h"
#include "tokenizers/tokenizer.h"

namespace loracpp::models {

// tokenizer (may be null) travels along where the format can hold it: tokenizer.bin in a HuggingFace
// folder, tokenizer.ggml.* metadata in GGUF (SentencePiece-style vocabularies).
void save_model(const LlamaModel& model, const tokenizers::Tokenizer* tokenizer, const std::filesystem::path& out,
                const std::string& format, DType dtype);

// Reorders the rows of a q/k projection ([heads*head_dim, in], or a bias [heads*head_dim]) between
// the interleaved rotary layout (pairs 2i, 2i+1) and HuggingFace's half-split one (pairs i, i+d/2).
Tensor permute_rotary_rows(const Tensor& weight, std::int64_t heads, ops::RopeLayout from, ops::RopeLayout to);

}  // namespace loracpp::models
