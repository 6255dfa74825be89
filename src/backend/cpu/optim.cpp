#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace loracpp::backend::cpu {

// PyTorch's AdamW: p -= lr*wd*p; m,v updated; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
void adamw_update(float* param, const float* grad, float* m, float* v, i64 n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, float bias_correction1, float bias_correction2) {
  const float step_size = lr / bias_correction1;
  const float sqrt_bc2 = std::sqrt(bias_correction2);
  const float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for if (n > 65536)
  for (i64 i = 0; i < n; ++i) {
    const float g = grad[i];
    param[i] *= decay;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    param[i] -= step_size * m[i] / (std::sqrt(v[i]) / sqrt_bc2 + eps);
  }
}

// PyTorch's SGD: g += wd*p; buf = g on the first step, else momentum*buf + (1-dampening)*g;
// g = nesterov ? g + momentum*buf : buf; p -= lr*g
void sgd_update(float* param, const float* grad, float* momentum_buffer, i64 n, float lr, float momentum,
                float dampening, float weight_decay, bool nesterov, bool first_step) {
#pragma omp parallel for if (n > 65536)
  for (i64 i = 0; i < n; ++i) {
    float g = grad[i] + weight_decay * param[i];
    if (momentum != 0.0f) {
      float& buf = momentum_buffer[i];
      buf = first_step ? g : momentum * buf + (1.0f - dampening) * g;
      g = nesterov ? g + momentum * buf : buf;
    }
    param[i] -= lr * g;
  }
}

}  // namespace loracpp::backend::cpu
