#pragma once
// Counter-based randomness: the value at (seed, index) never depends on thread count or call
// order, so dropout masks and initialisations are reproducible.
#include <cmath>
#include <cstdint>
#include <numbers>

#include "core/counter_hash.h"
#include "core/tensor.h"

namespace loracpp {


class Rng {
 public:
  explicit Rng(std::uint64_t seed) : seed_(seed) {}
  float uniform() { return uniform_at(seed_, counter_++); }
  float uniform(float low, float high) { return low + (high - low) * uniform(); }
  float normal() {  // Box-Muller
    const float u1 = 1.0f - uniform();
    const float u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(2.0f * std::numbers::pi_v<float> * u2);
  }
  std::uint64_t next_u64() { return mix64(mix64(seed_) ^ counter_++); }
  std::uint64_t seed() const { return seed_; }
  std::uint64_t counter() const { return counter_; }
  void set_counter(std::uint64_t counter) { counter_ = counter; }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

Tensor randn(const Shape& shape, Rng& rng, DType dtype = DType::f32, float std = 1.0f);
Tensor rand_uniform(const Shape& shape, Rng& rng, float low, float high, DType dtype = DType::f32);

}  // namespace loracpp
