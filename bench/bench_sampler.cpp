// Time to pick one token from a vocabulary's logits: the sampler against sorting the whole
// vocabulary first (how the cuts read by definition, and how the sampler worked before), side by
// side, for a language model's vocabulary sizes; logits peaked as a trained model's (normal, sd 3)
// and flat as a random model's (sd 0.1), where top-p keeps most of the vocabulary.
//   bench_sampler [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "models/sampler.h"

using loracpp::models::Sampler;
using loracpp::models::SamplerOptions;

namespace {

std::vector<float> logits(std::int64_t vocab, float sd) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> out(static_cast<std::size_t>(vocab));
  for (float& l : out) l = normal(rng);
  return out;
}

SamplerOptions options(int cut) {
  if (cut == 0) return {.temperature = 1.0f};
  if (cut == 1) return {.temperature = 0.8f, .top_p = 0.9f};
  return {.temperature = 0.8f, .top_k = 40};
}

// The definition: the whole vocabulary sorted, top-k and top-p cut from the front, drawn in order.
std::int64_t sorted_draw(const std::vector<float>& l, const SamplerOptions& o, double u) {
  std::vector<std::int64_t> order(l.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return l[static_cast<std::size_t>(a)] > l[static_cast<std::size_t>(b)]; });
  if (o.top_k > 0 && static_cast<std::size_t>(o.top_k) < order.size()) order.resize(static_cast<std::size_t>(o.top_k));
  std::vector<double> p(order.size());
  double total = 0;
  for (std::size_t i = 0; i < order.size(); ++i)
    total += p[i] = std::exp((l[static_cast<std::size_t>(order[i])] - l[static_cast<std::size_t>(order[0])]) / o.temperature);
  std::size_t keep = order.size();
  double cumulative = 0;
  for (std::size_t i = 0; i < order.size() && o.top_p < 1.0f; ++i)
    if ((cumulative += p[i] / total) >= o.top_p) {
      keep = i + 1;
      break;
    }
  double target = u * std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  for (std::size_t i = 0; i < keep; ++i)
    if ((target -= p[i]) < 0) return order[i];
  return order[keep - 1];
}

// Arguments: vocabulary, cut (0 temperature only, 1 top-p 0.9, 2 top-k 40), flat (0 or 1).
void args(benchmark::internal::Benchmark* b) {
  for (const std::int64_t vocab : {32000, 49152})
    for (const std::int64_t cut : {0, 1, 2})
      for (const std::int64_t flat : {0, 1}) b->Args({vocab, cut, flat});
}

void BM_Sampler(benchmark::State& state) {
  const auto l = logits(state.range(0), state.range(2) ? 0.1f : 3.0f);
  Sampler sampler(options(static_cast<int>(state.range(1))));
  for (auto _ : state) benchmark::DoNotOptimize(sampler.sample(l));
}
BENCHMARK(BM_Sampler)->Apply(args)->Unit(benchmark::kMicrosecond);

void BM_SortedReference(benchmark::State& state) {
  const auto l = logits(state.range(0), state.range(2) ? 0.1f : 3.0f);
  const SamplerOptions o = options(static_cast<int>(state.range(1)));
  double u = 0.37;
  for (auto _ : state) {
    benchmark::DoNotOptimize(sorted_draw(l, o, u));
    u = std::fmod(u + 0.618, 1.0);
  }
}
BENCHMARK(BM_SortedReference)->Apply(args)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
