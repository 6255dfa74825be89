#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

// The row sums are in double. GCC vectorises a reduction only where it may reorder the sum, which
// `omp simd reduction` allows; without it each row's sum was one scalar chain (RMSNorm at a tenth
// of the speed of a pass over memory).

// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps)
void rms_norm_forward(const float* x, const float* w, float* y, float* rstd, i64 rows, i64 dim, float eps) {
#pragma omp parallel for if (rows * dim > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (i64 d = 0; d < dim; ++d) sum += static_cast<double>(xr[d]) * xr[d];
    const float s = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    rstd[r] = s;
    float* yr = y + r * dim;
#pragma omp simd
    for (i64 d = 0; d < dim; ++d) yr[d] = xr[d] * s * w[d];
  }
}

// dx = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)); dw += sum_rows(dy * x * rstd)
void rms_norm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                       i64 rows, i64 dim) {
#pragma omp parallel for if (rows * dim > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* gr = dy + r * dim;
    double dot = 0;
#pragma omp simd reduction(+ : dot)
    for (i64 d = 0; d < dim; ++d) dot += static_cast<double>(gr[d]) * w[d] * xr[d];
    const float s = rstd[r];
    const float c = static_cast<float>(dot / static_cast<double>(dim)) * s * s;
    if (dx) {
      float* out = dx + r * dim;
#pragma omp simd
      for (i64 d = 0; d < dim; ++d) out[d] = s * (gr[d] * w[d] - xr[d] * c);
    }
  }
  if (dw) {
    for (i64 r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      const float* gr = dy + r * dim;
      for (i64 d = 0; d < dim; ++d) dw[d] += gr[d] * xr[d] * rstd[r];
    }
  }
}

void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, i64 rows,
                        i64 dim, float eps) {
#pragma omp parallel for if (rows * dim > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double sum = 0;
    for (i64 d = 0; d < dim; ++d) sum += xr[d];
    const double mu = sum / static_cast<double>(dim);
    double var = 0;
    for (i64 d = 0; d < dim; ++d) var += (xr[d] - mu) * (xr[d] - mu);
    const float s = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(dim) + eps));
    mean[r] = static_cast<float>(mu);
    rstd[r] = s;
    float* yr = y + r * dim;
    for (i64 d = 0; d < dim; ++d) {
      const float norm = (xr[d] - mean[r]) * s;
      yr[d] = norm * (w ? w[d] : 1.0f) + (b ? b[d] : 0.0f);
    }
  }
}

// With xhat = (x - mean) * rstd and g = dy * w: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                         float* dx, float* dw, float* db, i64 rows, i64 dim) {
  if (dx) {
#pragma omp parallel for if (rows * dim > 16384)
    for (i64 r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      const float* gr = dy + r * dim;
      double sum_g = 0, sum_gx = 0;
      for (i64 d = 0; d < dim; ++d) {
        const double g = gr[d] * (w ? w[d] : 1.0f);
        sum_g += g;
        sum_gx += g * (xr[d] - mean[r]) * rstd[r];
      }
      const auto mean_g = static_cast<float>(sum_g / static_cast<double>(dim));
      const auto mean_gx = static_cast<float>(sum_gx / static_cast<double>(dim));
      float* out = dx + r * dim;
      for (i64 d = 0; d < dim; ++d) {
        const float xhat = (xr[d] - mean[r]) * rstd[r];
        out[d] = rstd[r] * (gr[d] * (w ? w[d] : 1.0f) - mean_g - xhat * mean_gx);
      }
    }
  }
  for (i64 r = 0; r < rows && (dw || db); ++r) {
    const float* xr = x + r * dim;
    const float* gr = dy + r * dim;
    for (i64 d = 0; d < dim; ++d) {
      if (dw) dw[d] += gr[d] * (xr[d] - mean[r]) * rstd[r];
      if (db) db[d] += gr[d];
    }
  }
}

}  // namespace loracpp::backend::cpu
