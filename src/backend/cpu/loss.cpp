#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"
#include "core/dtype.h"

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

// Each row is read from memory once: the passes over it (max, exponentials, scaling) find it in
// cache, and the exponentials serve both the log-sum-exp and the gradient.
void cross_entropy_with_grad(const float* logits, const i64* targets, float* loss, float* lse, float grad_scale,
                             float* dlogits, i64 rows, i64 vocab, i64 ignore_index) {
#pragma omp parallel for if (rows * vocab > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    float* out = dlogits + r * vocab;
    const i64 t = targets[r];
    const float max = max_of(row, vocab), target_logit = t == ignore_index ? 0.0f : row[t];  // before out is written
    const float sum = exp_shifted(row, max, 1.0f, out, vocab);
    lse[r] = max + std::log(sum);
    if (t == ignore_index) {
      loss[r] = 0.0f;
      for (i64 v = 0; v < vocab; ++v) out[v] = 0.0f;
      continue;
    }
    loss[r] = lse[r] - target_logit;
    const float k = grad_scale / sum;
    for (i64 v = 0; v < vocab; ++v) out[v] *= k;  // vectorised
    out[t] -= grad_scale;
  }
}

// Each row's exponentials are taken once, into a row buffer that stays in cache, and serve both
// the log-sum-exp and the gradient, which is written once, in bf16.
void cross_entropy_with_bf16_grad(const float* logits, const i64* targets, float* loss, float* lse, float grad_scale,
                                  std::uint16_t* dlogits, i64 rows, i64 vocab, i64 ignore_index) {
#pragma omp parallel if (rows * vocab > 16384)
  {
    std::vector<float> exps(static_cast<std::size_t>(vocab));
#pragma omp for
    for (i64 r = 0; r < rows; ++r) {
      const float* row = logits + r * vocab;
      std::uint16_t* out = dlogits + r * vocab;
      const float max = max_of(row, vocab);
      const float sum = exp_shifted(row, max, 1.0f, exps.data(), vocab);
      lse[r] = max + std::log(sum);
      const i64 t = targets[r];
      if (t == ignore_index) {
        loss[r] = 0.0f;
        for (i64 v = 0; v < vocab; ++v) out[v] = 0;
        continue;
      }
      loss[r] = lse[r] - row[t];
      const float k = grad_scale / sum;
      to_bf16(exps.data(), out, vocab, k);
      out[t] = float_to_bf16(exps[static_cast<std::size_t>(t)] * k - grad_scale);
    }
  }
}

// The gradient's normalisation is left until after the product: each row's exponentials go to bf16
// unnormalised as they are taken (no f32 row buffer to write and read again), the product with w
// sums them, and each row of dx is then scaled by grad_scale / sum, less grad_scale times the
// target's row of w (the one-hot term, exact in f32 rather than rounded into the operand).
void cross_entropy_bf16_input_grad(const float* logits, const i64* targets, float* loss, float* lse, float grad_scale,
                                   const std::uint16_t* w, std::uint16_t* exps, float* dx, i64 rows, i64 vocab, i64 in,
                                   i64 ignore_index) {
  std::vector<float> row_scale(static_cast<std::size_t>(rows));
#pragma omp parallel for if (rows * vocab > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    std::uint16_t* out = exps + r * vocab;
    const i64 t = targets[r];
    const bool ignored = t == ignore_index;
    const float max = max_of(row, vocab);
    const float sum = exp_shifted(row, max, 1.0f, nullptr, vocab, ignored ? nullptr : out);
    lse[r] = max + std::log(sum);
    if (ignored) {  // no loss, no gradient: a zero row of the operand
      loss[r] = 0.0f;
      std::fill(out, out + vocab, std::uint16_t{0});
      row_scale[static_cast<std::size_t>(r)] = 0.0f;
      continue;
    }
    loss[r] = lse[r] - row[t];
    row_scale[static_cast<std::size_t>(r)] = grad_scale / sum;
  }
  gemm_bf16(false, rows, in, vocab, 1.0f, exps, vocab, w, in, 0.0f, dx, in);
#pragma omp parallel for if (rows * in > 16384)
  for (i64 r = 0; r < rows; ++r) {
    const i64 t = targets[r];
    if (t == ignore_index) continue;  // its operand row was zero
    const float k = row_scale[static_cast<std::size_t>(r)];
    const std::uint16_t* target_row = w + t * in;
    float* d = dx + r * in;
    for (i64 c = 0; c < in; ++c) d[c] = k * d[c] - grad_scale * bf16_to_float(target_row[c]);
  }
}

}  // namespace loracpp::backend::cpu
