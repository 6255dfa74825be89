#include "models/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace loracpp::models {

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  check(options.temperature >= 0, "sampler", "temperature must be >= 0, got {}", options.temperature);
  check(options.top_k >= 0, "sampler", "top_k must be >= 0, got {}", options.top_k);
  check(options.top_p > 0 && options.top_p <= 1, "sampler", "top_p must be in (0, 1], got {}", options.top_p);
}

std::int64_t Sampler::sample(std::span<const float> logits) {
  check(!logits.empty(), "sampler", "no logits to sample from");
  if (options_.temperature == 0.0f)  // the first maximum, as llama2.c's argmax
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<std::int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)]; });
  if (options_.top_k > 0 && static_cast<std::size_t>(options_.top_k) < order.size())
    order.resize(static_cast<std::size_t>(options_.top_k));
  std::vector<double> probs(order.size());
  const double top = logits[static_cast<std::size_t>(order[0])];
  double total = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    probs[i] = std::exp((logits[static_cast<std::size_t>(order[i])] - top) / options_.temperature);
    total += probs[i];
  }
  std::size_t keep = order.size();
  if (options_.top_p < 1.0f) {
    double cumulative = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  const double kept_total = std::accumulate(probs.begin(), probs.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  double target = rng_.uniform() * kept_total;
  for (std::size_t i = 0; i < keep; ++i) {
    target -= probs[i];
    if (target < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace loracpp::models
