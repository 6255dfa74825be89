#include "core/random.h"

#include <vector>

namespace loracpp {

Tensor randn(const Shape& shape, Rng& rng, DType dtype, float std) {
  std::vector<float> values(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& v : values) v = std * rng.normal();
  return Tensor::from_floats(values, shape, dtype);
}

Tensor rand_uniform(const Shape& shape, Rng& rng, float low, float high, DType dtype) {
  std::vector<float> values(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& v : values) v = rng.uniform(low, high);
  return Tensor::from_floats(values, shape, dtype);
}

}  // namespace loracpp
