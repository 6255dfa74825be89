#pragma once
// Picks the next token from logits: greedy (temperature 0), or temperature sampling restricted to
// the top-k tokens and/or the smallest set whose probability reaches top-p.
#include <cstdint>
#include <span>
#include <vector>

#include "core/random.h"

namespace loracpp::models {

struct SamplerOptions {
  float temperature = 1.0f;  // 0: greedy
  std::int64_t top_k = 0;    // 0: no limit
  float top_p = 1.0f;        // 1: no limit
  std::uint64_t seed = 42;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  std::int64_t sample(std::span<const float> logits);

 private:
  SamplerOptions options_;
  Rng rng_;
  std::vector<float> weights_;        // reused from token to token: a vocabulary's worth each
  std::vector<std::uint64_t> keys_;
};

}  // namespace loracpp::models
