#include <cmath>
#include <limits>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void cross_entropy_forward(const float* logits, const i64* targets, float* loss, float* lse, i64 rows, i64 vocab,
                           i64 ignore_index) {
#pragma omp parallel for if (rows * vocab > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    float max = -std::numeric_limits<float>::infinity();
    for (i64 v = 0; v < vocab; ++v) max = std::max(max, row[v]);
    double sum = 0;
    for (i64 v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - max));
    lse[r] = max + static_cast<float>(std::log(sum));
    loss[r] = targets[r] == ignore_index ? 0.0f : lse[r] - row[targets[r]];
  }
}

void cross_entropy_backward(const float* logits, const i64* targets, const float* lse, float grad_scale,
                            float* dlogits, i64 rows, i64 vocab, i64 ignore_index) {
#pragma omp parallel for if (rows * vocab > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    float* out = dlogits + r * vocab;
    if (targets[r] == ignore_index) {
      for (i64 v = 0; v < vocab; ++v) out[v] = 0.0f;
      continue;
    }
    for (i64 v = 0; v < vocab; ++v) out[v] = std::exp(row[v] - lse[r]) * grad_scale;
    out[targets[r]] -= grad_scale;
  }
}

}  // namespace loracpp::backend::cpu
