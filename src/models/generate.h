#pragma once
// Autoregressive generation with a KV cache, counting steps as llama2.c's run.c does: `steps`
// positions in all, the BOS token and the prompt included.
#include <functional>
#include <string>
#include <string_view>

#include "models/llama.h"
#include "models/sampler.h"
#include "tokenizers/tokenizer.h"

namespace loracpp::models {

struct GenerateOptions {
  std::int64_t steps = 256;
  SamplerOptions sampler{};
};

struct GenerateResult {
  std::vector<std::int64_t> tokens;  // BOS, prompt and generated tokens
  std::int64_t prompt_tokens = 0;
  std::int64_t generated = 0;
  double prompt_seconds = 0;  // the prompt's pass, which fills the KV cache
  double seconds = 0;         // the generated tokens'
};

// Calls on_text with each decoded piece as it is produced (the prompt's pieces included, as run.c).
GenerateResult generate(const LlamaModel& model, const tokenizers::Tokenizer& tokenizer, std::string_view prompt,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text);

}  // namespace loracpp::models
