#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"

namespace loracpp::backend::cpu {

void softmax_forward(const float* x, float* y, i64 rows, i64 cols) {
#pragma omp parallel for if (rows * cols > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float max = max_of(xr, cols);
    const float sum = exp_shifted(xr, max, 1.0f, yr, cols);
    const float inv = 1.0f / sum;
#pragma omp simd
    for (i64 c = 0; c < cols; ++c) yr[c] *= inv;
  }
}

// dx = y * (dy - sum(dy * y))
void softmax_backward(const float* y, const float* dy, float* dx, i64 rows, i64 cols) {
#pragma omp parallel for if (rows * cols > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (i64 c = 0; c < cols; ++c) dot += yr[c] * gr[c];
    float* out = dx + r * cols;
    for (i64 c = 0; c < cols; ++c) out[c] = yr[c] * (gr[c] - static_cast<float>(dot));
  }
}

}  // namespace loracpp::backend::cpu
