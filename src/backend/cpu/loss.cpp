#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/scratch.h"
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

namespace {

// The fused loss's blocks: rows per item of work (at most) and vocabulary entries per product.
// Large items read the weight fewer times (once per item) and give oneDNN's products more rows
// to spread their packing over: on a Zen 5, for 1024 rows, 128-row items took 70 ms at tiny's
// [32000, 288] and 179 at SmolLM's [49152, 576], 512-row items 62 and 165 (the logits buffer
// and its kernel: 61 and 173). A block's scores then fill half of a core's 1 MB L2.
constexpr i64 kLossRows = 512;
constexpr i64 kLossVocab = 256;

// Each thread's buffers for it, kept from call to call (scratch.h): x in bf16 (the calling
// thread's), and a block's scores and rounded exponentials (each team member's).
struct LossScratch {
  Scratch<std::uint16_t> x16, exps;
  Scratch<float> scores;
};
thread_local LossScratch scratch;

// One item of linear_cross_entropy_bf16: `rows` rows of x (bf16, x16) against every block of w, on
// the calling thread. Each row keeps the largest score so far, the sum of its exponentials against
// it and, in dx, their product with w's rows; a larger score scales both down before the block's
// exponentials are added. At the end dx is normalised and the target's row of w taken off.
void loss_rows(const std::uint16_t* x16, const std::uint16_t* w, const i64* targets, float* loss, float* lse,
               float grad_scale, float* dx, i64 rows, i64 vocab, i64 in, i64 ignore_index, float* scores,
               std::uint16_t* exps, float* max, float* sum, float* target_logit) {
  std::fill(max, max + rows, -std::numeric_limits<float>::infinity());
  std::fill(sum, sum + rows, 0.0f);
  for (i64 c0 = 0; c0 < vocab; c0 += kLossVocab) {
    const i64 cols = std::min(kLossVocab, vocab - c0);
    const std::uint16_t* w_block = w + c0 * in;
    gemm_bf16_serial(false, true, rows, cols, in, 1.0f, x16, in, w_block, in, 0.0f, scores, cols);
    // The next block of the weight asked for while this one's exponentials are taken, a few cache
    // lines a row: in a training step the weight comes from memory (read once per item of rows,
    // long evicted since the last step's), and oneDNN's products stall on it as they pack it. With
    // the weight flushed from the caches first, tiny's [1024, 288] x [32000, 288]ᵀ took 57.0 ->
    // 55.2 ms and SmolLM's [1024, 576] x [49152, 576]ᵀ 163 -> 158 ms.
    const char* next = reinterpret_cast<const char*>(w_block + cols * in);
    const i64 next_bytes = std::min(kLossVocab, vocab - c0 - cols) * in * 2;
    const i64 lines_per_row = (next_bytes / 64 + rows - 1) / rows;
    for (i64 r = 0; r < rows; ++r) {
      for (i64 l = 0; l < lines_per_row; ++l) {
        const i64 offset = (r * lines_per_row + l) * 64;
        if (offset < next_bytes) __builtin_prefetch(next + offset, 0, 2);
      }
      const float* s = scores + r * cols;
      const i64 t = targets[r];
      if (t >= c0 && t < c0 + cols) target_logit[r] = s[t - c0];
      const float block_max = max_of(s, cols);
      if (block_max > max[r]) {
        if (c0 > 0) {  // the sums so far were taken against a smaller largest score
          const float shrink = std::exp(max[r] - block_max);
          sum[r] *= shrink;
          float* d = dx + r * in;
          for (i64 c = 0; c < in; ++c) d[c] *= shrink;
        }
        max[r] = block_max;
      }
      sum[r] += exp_shifted(s, max[r], 1.0f, nullptr, cols, exps + r * cols);
    }
    gemm_bf16_serial(false, false, rows, in, cols, 1.0f, exps, cols, w_block, in, c0 > 0 ? 1.0f : 0.0f, dx, in);
  }
  for (i64 r = 0; r < rows; ++r) {
    float* d = dx + r * in;
    lse[r] = max[r] + std::log(sum[r]);
    const i64 t = targets[r];
    if (t == ignore_index) {  // no loss, no gradient
      loss[r] = 0.0f;
      std::fill(d, d + in, 0.0f);
      continue;
    }
    loss[r] = lse[r] - target_logit[r];
    const float k = grad_scale / sum[r];
    const std::uint16_t* target_row = w + t * in;
    for (i64 c = 0; c < in; ++c) d[c] = k * d[c] - grad_scale * bf16_to_float(target_row[c]);
  }
}

}  // namespace

// Blocks of rows are shared out between the threads, each taking its rows through every block of
// the vocabulary: the logits exist only as one block of scores in cache, and the weight is read
// once per block of rows (from the L3 cache where it fits there). Where bf16 products are not
// native the chunked path's library products are left to do it.
bool linear_cross_entropy_bf16(const float* x, const std::uint16_t* w, const i64* targets, float* loss, float* lse,
                               float grad_scale, float* dx, i64 rows, i64 vocab, i64 in, i64 ignore_index) {
  if (!bf16_products_native() || rows == 0 || vocab == 0 || in == 0) return false;
  std::uint16_t* const x16 = scratch.x16.at_least(rows * in);
  convert(x, DType::f32, x16, DType::bf16, rows * in);
  // As many items for each thread, of at most kLossRows rows, as even as they come.
  const i64 threads = omp_get_max_threads();
  const i64 items = threads * ((rows + threads * kLossRows - 1) / (threads * kLossRows));
  const i64 block = (rows + items - 1) / items;
#pragma omp parallel
  {
    float* const scores = scratch.scores.at_least(block * kLossVocab);
    std::uint16_t* const exps = scratch.exps.at_least(block * kLossVocab);
    std::vector<float> row_state(static_cast<std::size_t>(3 * block));
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < items; ++item) {
      const i64 r0 = item * block, n = std::min(block, rows - r0);
      if (n <= 0) continue;  // fewer rows than threads
      loss_rows(x16 + r0 * in, w, targets + r0, loss + r0, lse + r0, grad_scale, dx + r0 * in, n, vocab, in,
                ignore_index, scores, exps, row_state.data(), row_state.data() + block,
                row_state.data() + 2 * block);
    }
  }
  return true;
}

}  // namespace loracpp::backend::cpu
