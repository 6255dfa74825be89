#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

void sum_rows(const float* x, float* out, i64 rows, i64 cols) {
#pragma omp parallel for if (rows * cols > 65536)
  for (i64 r = 0; r < rows; ++r) {
    double total = 0;  // double: sums feed gradient checks and losses
    const float* row = x + r * cols;
    for (i64 c = 0; c < cols; ++c) total += row[c];
    out[r] = static_cast<float>(total);
  }
}

double sum_squares(const float* x, i64 n) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) if (n > 65536)
  for (i64 i = 0; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
  return total;
}

}  // namespace loracpp::backend::cpu
