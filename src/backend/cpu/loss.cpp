#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace loracpp::backend::cpu {

void cross_entropy_forward(const float* logits, const i64* targets, float* loss, float* lse, i64 rows, i64 vocab,
                           i64 ignore_index) {
#pragma omp parallel for if (rows * vocab > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    const float max = max_of(row, vocab);
    // Each of 16 lanes adds at most vocab / 16 terms <= 1: f32 is enough.
    lse[r] = max + std::log(exp_shifted(row, max, 1.0f, nullptr, vocab));
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
    exp_shifted(row, lse[r], grad_scale, out, vocab);
    out[targets[r]] -= grad_scale;
  }
}

}  // namespace loracpp::backend::cpu
