#include "models/generate.h"

#include <chrono>

#include "ops/tape.h"

namespace loracpp::models {

GenerateResult generate(const LlamaModel& model, const tokenizers::Tokenizer& tokenizer, std::string_view prompt,
                        const GenerateOptions& options, const std::function<void(const std::string&)>& on_text) {
  autograd::NoGradGuard no_grad;
  check(options.steps > 0, "generate", "steps must be positive, got {}", options.steps);
  check(tokenizer.vocab_size() == model.config().vocab_size, "generate",
        "the tokenizer has {} tokens but the model's vocabulary has {}", tokenizer.vocab_size(),
        model.config().vocab_size);
  const std::int64_t steps = std::min(options.steps, model.config().max_position_embeddings);
  GenerateResult result;
  const std::vector<std::int64_t> prompt_ids = tokenizer.encode(prompt, /*add_bos=*/true, /*add_eos=*/false);
  result.prompt_tokens = static_cast<std::int64_t>(prompt_ids.size());
  KVCache cache = model.make_cache(1, steps, model.kv_cache_dtype());
  Sampler sampler(options.sampler);
  auto next_logits = [&](const std::int64_t* ids, std::int64_t count) {
    const std::vector<std::int64_t> positions(ids, ids + count);
    return model.forward(Tensor::from_ints(positions, {1, count}), &cache, /*last_only=*/true).to_floats();
  };

  // The prompt's positions take one pass of the model, as a batch of rows: its products run at
  // the matrix-multiply rate instead of reading every weight once per position. Only the last
  // position's logits are kept; they choose the first generated token. A prompt longer than the
  // steps allow is only echoed.
  const auto prompt_start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  if (result.prompt_tokens <= steps) logits = next_logits(prompt_ids.data(), result.prompt_tokens);
  const auto start = std::chrono::steady_clock::now();
  result.prompt_seconds = std::chrono::duration<double>(start - prompt_start).count();

  std::int64_t token = prompt_ids[0];
  result.tokens.push_back(token);
  for (std::int64_t pos = 0; pos < steps; ++pos) {
    std::int64_t next;
    if (pos + 1 < result.prompt_tokens) {
      next = prompt_ids[static_cast<std::size_t>(pos + 1)];  // the cache holds it already
    } else {
      if (pos >= result.prompt_tokens) logits = next_logits(&token, 1);
      next = sampler.sample(logits);
      ++result.generated;
    }
    if (next == tokenizer.bos_id()) break;  // run.c stops at BOS
    on_text(tokenizer.decode_piece(token, next));
    result.tokens.push_back(next);
    token = next;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace loracpp::models
