// Our matmul (and linear) against a direct cblas_sgemm on the same sizes: the gap is the cost of
// our layers (checks, allocation, dispatch). Run: build/bench/bench_matmul
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "loracpp/loracpp.h"

namespace {
using namespace loracpp;

void args(benchmark::internal::Benchmark* b) {
  for (int n : {64, 256, 1024}) b->Args({n, n, n});
  b->Args({512, 576, 1536});  // a SmolLM MLP projection over 512 tokens
  b->Args({2048, 64, 64});    // a small LoRA product
}

void BM_blas_sgemm(benchmark::State& state) {
  const auto m = state.range(0), k = state.range(1), n = state.range(2);
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(k * n), 0.25f),
      c(static_cast<std::size_t>(m * n));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(n), 0.0f,
                c.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(2 * m * n * k), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_blas_sgemm_nt(benchmark::State& state) {  // B given as [n, k], as a Linear weight is
  const auto m = state.range(0), k = state.range(1), n = state.range(2);
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(k * n), 0.25f),
      c(static_cast<std::size_t>(m * n));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), b.data(), static_cast<int>(k), 0.0f,
                c.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(2 * m * n * k), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_loracpp_matmul(benchmark::State& state) {
  const auto m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor a = Tensor::full({m, k}, 0.5f), b = Tensor::full({k, n}, 0.25f);
  for (auto _ : state) benchmark::DoNotOptimize(ops::matmul(a, b));
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(2 * m * n * k), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_loracpp_linear(benchmark::State& state) {  // x @ W^T with W [out, in]: a transposed view, no copy
  const auto m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor x = Tensor::full({m, k}, 0.5f), w = Tensor::full({n, k}, 0.25f);
  for (auto _ : state) benchmark::DoNotOptimize(ops::linear(x, w));
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(2 * m * n * k), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
}  // namespace

BENCHMARK(BM_blas_sgemm)->Apply(args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_blas_sgemm_nt)->Apply(args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_loracpp_matmul)->Apply(args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_loracpp_linear)->Apply(args)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
