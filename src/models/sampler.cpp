#include "models/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace loracpp::models {

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  check(options.temperature >= 0, "sampler", "temperature must be >= 0, got {}", options.temperature);
  check(options.top_k >= 0, "sampler", "top_k must be >= 0, got {}", options.top_k);
  check(options.top_p > 0 && options.top_p <= 1, "sampler", "top_p must be in (0, 1], got {}", options.top_p);
}

namespace {

// A token's place in the order top-k and top-p cut: the higher logit first, the lower index among
// equals. Packed as the logit's bits mapped to an unsigned order (flipped: highest first) above
// the token's index, so that plain integer comparisons sort and select.
std::uint64_t order_key(float logit, std::size_t token) {
  std::uint32_t bits;
  std::memcpy(&bits, &logit, sizeof bits);
  bits = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;  // ascending with the float
  return (static_cast<std::uint64_t>(~bits) << 32) | static_cast<std::uint32_t>(token);
}

std::size_t token_of(std::uint64_t key) { return static_cast<std::uint32_t>(key); }

double weight_sum(const std::uint64_t* keys, std::size_t count, const std::vector<float>& weight) {
  double sum = 0;
  for (std::size_t i = 0; i < count; ++i) sum += weight[token_of(keys[i])];
  return sum;
}

// How many of keys[0, count) (any order) top-p keeps: the fewest first ones in the order whose
// weights reach `need`, or all of them. The keys are left with those first: the boundary is found
// by halving the range around a selected middle (linear time on average), the last few sorted.
std::size_t nucleus(std::uint64_t* keys, std::size_t count, const std::vector<float>& weight, double need) {
  std::size_t lo = 0, hi = count;  // the last kept token lies in [lo, hi)
  double kept = 0;                 // the weight of keys[0, lo), all kept
  while (hi - lo > 64) {
    const std::size_t mid = lo + (hi - lo) / 2;
    std::nth_element(keys + lo, keys + mid, keys + hi);
    const double lower = weight_sum(keys + lo, mid - lo, weight);
    if (kept + lower >= need) {
      hi = mid;
    } else {
      kept += lower;
      lo = mid;
    }
  }
  std::sort(keys + lo, keys + hi);
  for (std::size_t i = lo; i < hi; ++i) {
    kept += weight[token_of(keys[i])];
    if (kept >= need) return i + 1;
  }
  return count;
}

}  // namespace

// Nothing sorts the whole vocabulary (32000 tokens had taken 3 ms a token to sort, against 7.6
// ms for the forward pass of a 110M-parameter model): top-k selects its k tokens, and top-p looks
// for its boundary by selection among the tokens whose probability reaches (1 - p) / (n - 1) of
// the whole (those below hold less than 1 - p together), among all where rounding leaves that
// set short. The draw walks the kept tokens in the order this leaves them in.
std::int64_t Sampler::sample(std::span<const float> logits) {
  check(!logits.empty(), "sampler", "no logits to sample from");
  if (options_.temperature == 0.0f)  // the first maximum, as llama2.c's argmax
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  const std::size_t n = logits.size();
  float top = logits[0];
  for (const float l : logits) top = l > top ? l : top;
  const float inverse = 1.0f / options_.temperature;
  std::vector<float>& weight = weights_;  // exp((logit - max) / temperature)
  weight.resize(n);
  double total = 0;
  for (std::size_t t = 0; t < n; ++t) total += weight[t] = std::exp((logits[t] - top) * inverse);

  std::vector<std::uint64_t>& keys = keys_;
  keys.clear();
  if (options_.top_k > 0 && static_cast<std::size_t>(options_.top_k) < n) {
    keys.resize(n);
    for (std::size_t t = 0; t < n; ++t) keys[t] = order_key(logits[t], t);
    const auto k = static_cast<std::size_t>(options_.top_k);
    std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(k), keys.end());
    keys.resize(k);
    total = weight_sum(keys.data(), k, weight);
  } else if (options_.top_p >= 1.0f) {  // every token, walked in the vocabulary's order
    double target = rng_.uniform() * total;
    for (std::size_t t = 0; t < n; ++t) {
      target -= weight[t];
      if (target < 0) return static_cast<std::int64_t>(t);
    }
    return static_cast<std::int64_t>(n - 1);
  } else if (n > 1) {
    const double cutoff = (1.0 - options_.top_p) / static_cast<double>(n - 1) * total;
    for (std::size_t t = 0; t < n; ++t)
      if (weight[t] >= cutoff) keys.push_back(order_key(logits[t], t));
    if (weight_sum(keys.data(), keys.size(), weight) < options_.top_p * total) keys.clear();
  }
  if (keys.empty()) {  // all tokens are candidates
    keys.resize(n);
    for (std::size_t t = 0; t < n; ++t) keys[t] = order_key(logits[t], t);
  }
  std::size_t count = keys.size();
  if (options_.top_p < 1.0f) count = nucleus(keys.data(), count, weight, options_.top_p * total);
  double target = rng_.uniform() * weight_sum(keys.data(), count, weight);
  for (std::size_t i = 0; i < count; ++i) {
    target -= weight[token_of(keys[i])];
    if (target < 0) return static_cast<std::int64_t>(token_of(keys[i]));
  }
  return static_cast<std::int64_t>(token_of(keys[count - 1]));
}

}  // namespace loracpp::models
