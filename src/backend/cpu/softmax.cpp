#include <cmath>
#include <limits>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void softmax_forward(const float* x, float* y, i64 rows, i64 cols) {
#pragma omp parallel for if (rows * cols > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float max = -std::numeric_limits<float>::infinity();
    for (i64 c = 0; c < cols; ++c) max = std::max(max, xr[c]);
    double sum = 0;
    for (i64 c = 0; c < cols; ++c) {
      yr[c] = std::exp(xr[c] - max);
      sum += yr[c];
    }
    const auto inv = static_cast<float>(1.0 / sum);
    for (i64 c = 0; c < cols; ++c) yr[c] *= inv;
  }
}

// dx = y * (dy - sum(dy * y))
void softmax_backward(const float* y, const float* dy, float* dx, i64 rows, i64 cols) {
#pragma omp parallel for if (rows * cols > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    double dot = 0;
    for (i64 c = 0; c < cols; ++c) dot += static_cast<double>(yr[c]) * gr[c];
    float* out = dx + r * cols;
    for (i64 c = 0; c < cols; ++c) out[c] = yr[c] * (gr[c] - static_cast<float>(dot));
  }
}

}  // namespace loracpp::backend::cpu
