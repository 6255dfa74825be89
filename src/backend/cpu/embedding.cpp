#include <cstring>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void embedding_forward(const void* weight, const i64* ids, void* out, i64 n, i64 dim, std::size_t element_size) {
  const std::size_t row = static_cast<std::size_t>(dim) * element_size;
  const auto* table = static_cast<const unsigned char*>(weight);
  auto* rows = static_cast<unsigned char*>(out);
#pragma omp parallel for if (n * dim > 65536)
  for (i64 i = 0; i < n; ++i)
    std::memcpy(rows + static_cast<std::size_t>(i) * row, table + static_cast<std::size_t>(ids[i]) * row, row);
}

void embedding_backward(const float* dy, const i64* ids, float* dweight, i64 n, i64 dim) {
  // Serial over tokens: the same id may repeat, and the order of additions stays fixed.
  for (i64 i = 0; i < n; ++i) {
    float* row = dweight + ids[i] * dim;
    const float* g = dy + i * dim;
    for (i64 d = 0; d < dim; ++d) row[d] += g[d];
  }
}

}  // namespace loracpp::backend::cpu
