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
  const DType dtype = model.dtype();
  KVCache cache = model.make_cache(1, steps, dtype);
  Sampler sampler(options.sampler);

  std::int64_t token = prompt_ids[0];
  result.tokens.push_back(token);
  auto start = std::chrono::steady_clock::now();
  for (std::int64_t pos = 0; pos < steps; ++pos) {
    std::int64_t next;
    if (pos + 1 < result.prompt_tokens) {
      // Prompt positions: only the cache matters, the next token is known.
      model.forward(Tensor::from_ints(std::vector<std::int64_t>{token}, {1, 1}), &cache, /*last_only=*/true);
      next = prompt_ids[static_cast<std::size_t>(pos + 1)];
    } else {
      const Tensor logits =
          model.forward(Tensor::from_ints(std::vector<std::int64_t>{token}, {1, 1}), &cache, /*last_only=*/true);
      const auto values = logits.to_floats();
      next = sampler.sample(values);
      ++result.generated;
    }
    if (next == tokenizer.bos_id()) break;  // run.c stops at BOS
    on_text(tokenizer.decode_piece(token, next));
    result.tokens.push_back(next);
    token = next;
    if (pos == 0) start = std::chrono::steady_clock::now();
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace loracpp::models
