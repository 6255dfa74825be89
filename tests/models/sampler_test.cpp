// The sampler draws from the distribution its options define: softmax(logits / temperature) over
// the tokens that survive top-k (the k most likely) and top-p (the fewest most likely whose
// probabilities reach p), renormalised. The reference below builds that distribution by sorting
// the whole vocabulary, as the definition reads; the sampler must match it without doing so.
#include "models/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace loracpp::models {
namespace {

std::vector<double> reference_distribution(const std::vector<float>& logits, const SamplerOptions& options) {
  std::vector<std::size_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] > logits[b]; });
  if (options.top_k > 0 && static_cast<std::size_t>(options.top_k) < order.size())
    order.resize(static_cast<std::size_t>(options.top_k));
  std::vector<double> weights;
  for (const std::size_t t : order)
    weights.push_back(std::exp((static_cast<double>(logits[t]) - logits[order[0]]) / options.temperature));
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  std::size_t keep = order.size();
  double cumulative = 0;
  for (std::size_t i = 0; i < order.size() && options.top_p < 1.0f; ++i) {
    cumulative += weights[i] / total;
    if (cumulative >= options.top_p) {
      keep = i + 1;
      break;
    }
  }
  const double kept = std::accumulate(weights.begin(), weights.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  std::vector<double> p(logits.size(), 0.0);
  for (std::size_t i = 0; i < keep; ++i) p[order[i]] = weights[i] / kept;
  return p;
}

// Draws `draws` tokens and checks each token's frequency against the reference, within five
// standard deviations of a binomial count, and that no token outside the kept set is drawn.
void expect_draws_match(const std::vector<float>& logits, const SamplerOptions& options, int draws = 20000) {
  const std::vector<double> p = reference_distribution(logits, options);
  Sampler sampler(options);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    const std::int64_t token = sampler.sample(logits);
    ASSERT_GE(token, 0);
    ASSERT_LT(token, static_cast<std::int64_t>(logits.size()));
    ASSERT_GT(p[static_cast<std::size_t>(token)], 0.0) << "token " << token << " is outside the kept set";
    ++counts[static_cast<std::size_t>(token)];
  }
  for (std::size_t t = 0; t < logits.size(); ++t) {
    const double expected = p[t] * draws, sigma = std::sqrt(draws * p[t] * (1 - p[t]));
    EXPECT_NEAR(counts[t], expected, 5 * sigma + 1) << "token " << t;
  }
}

const std::vector<float> kEight = {1.0f, 2.5f, -0.5f, 2.0f, 0.3f, 2.5f, -3.0f, 1.7f};

TEST(Sampler, TemperatureAloneDrawsFromTheSoftmax) {
  expect_draws_match(kEight, {.temperature = 0.7f, .seed = 1});
  expect_draws_match(kEight, {.temperature = 1.5f, .seed = 2});
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  expect_draws_match(kEight, {.temperature = 1.0f, .top_k = 3, .seed = 3});
  expect_draws_match(kEight, {.temperature = 2.0f, .top_k = 1, .seed = 4});
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  expect_draws_match(kEight, {.temperature = 1.0f, .top_p = 0.8f, .seed = 5});
  expect_draws_match(kEight, {.temperature = 0.5f, .top_p = 0.3f, .seed = 6});
  expect_draws_match(kEight, {.temperature = 1.0f, .top_k = 5, .top_p = 0.6f, .seed = 7});
}

TEST(Sampler, EqualLogitsAreCutByIndex) {
  const std::vector<float> flat(6, 0.25f);
  expect_draws_match(flat, {.temperature = 1.0f, .top_k = 2, .seed = 8});
  expect_draws_match(flat, {.temperature = 1.0f, .top_p = 0.5f, .seed = 9});
  Sampler one({.temperature = 1.0f, .top_k = 1});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(one.sample(flat), 0);
}

// A language model's vocabulary: top-p keeps a few hundred of 32000 tokens; the sampler sorts
// only the candidates that can be among them.
TEST(Sampler, TopPOnALargeVocabularyMatchesTheReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(32000);
  for (float& l : logits) l = normal(rng);
  const SamplerOptions options{.temperature = 0.8f, .top_p = 0.9f, .seed = 12};
  const std::vector<double> p = reference_distribution(logits, options);
  const auto kept = std::count_if(p.begin(), p.end(), [](double x) { return x > 0; });
  EXPECT_GT(kept, 20);
  EXPECT_LT(kept, 32000 / 4);
  expect_draws_match(logits, options, 4000);
  expect_draws_match(logits, {.temperature = 0.8f, .top_k = 40, .seed = 13}, 4000);
}

TEST(Sampler, TopPNearOneAndTinyVocabulariesStayValid) {
  std::vector<float> logits(1000);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = -static_cast<float>(i) * 1e-3f;
  expect_draws_match(logits, {.temperature = 1.0f, .top_p = 0.9999999f, .seed = 14}, 5000);
  expect_draws_match({3.0f}, {.temperature = 1.0f, .top_p = 0.5f, .seed = 15}, 100);
  expect_draws_match({3.0f, 3.0f}, {.temperature = 1.0f, .top_p = 0.1f, .seed = 16}, 100);
}

TEST(Sampler, GreedyAndSeedsAreDeterministic) {
  Sampler greedy({.temperature = 0.0f});
  EXPECT_EQ(greedy.sample(kEight), 1);  // the first of the two maxima
  auto draws = [](std::uint64_t seed) {
    Sampler sampler({.temperature = 1.0f, .top_p = 0.9f, .seed = seed});
    std::vector<std::int64_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(sampler.sample(kEight));
    return out;
  };
  EXPECT_EQ(draws(21), draws(21));
  EXPECT_NE(draws(21), draws(22));
}

}  // namespace
}  // namespace loracpp::models
