#pragma once
// llama2.c checkpoints (`run.c`'s legacy format): seven int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means an unshared classifier follows),
// then f32 weights, each stacked over layers. Tensors come out as views of the mapped file under
// HuggingFace names; q/k rows keep llama2.c's interleaved rotary layout.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loracpp::io {

struct Llama2cHeader {
  std::int64_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared_classifier;
};

struct Llama2cCheckpoint {
  Llama2cHeader header;
  std::vector<std::pair<std::string, Tensor>> tensors;
};

Llama2cCheckpoint read_llama2c(const std::filesystem::path& path);
bool looks_like_llama2c(const std::filesystem::path& path);

}  // namespace loracpp::io
