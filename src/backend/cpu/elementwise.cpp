#include <algorithm>
#include <cmath>
#include <numbers>
#include <type_traits>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"
#include "core/random.h"
#include "core/tensor.h"

namespace loracpp::backend::cpu {

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

constexpr float kSqrt2OverPi = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluCubic = 0.044715f;
}  // namespace

namespace {

// binary() for one op, fixed at compile time: with the op's switch inside the loop (apply_binary),
// GCC vectorised neither loop, and a residual add ran at 14 GB/s where a scale runs at 200.
template <BinaryOp kOp>
void binary_of(const float* a, const i64* a_strides, const float* b, const i64* b_strides, float* out,
               const i64* shape, int rank) {
  const Shape dims(shape, shape + rank);
  const i64 n = shape_numel(dims);
  const Shape contiguous = contiguous_strides(dims);
  const bool a_dense = Shape(a_strides, a_strides + rank) == contiguous;
  const bool b_dense = Shape(b_strides, b_strides + rank) == contiguous;
  if (a_dense && b_dense) {
#pragma omp parallel for simd if (n > 65536)
    for (i64 i = 0; i < n; ++i) out[i] = apply_binary(kOp, a[i], b[i]);
    return;
  }
  // Broadcast: rows of the innermost dim in parallel; each row finds its input offsets once.
  if (rank == 0 || n == 0) {
    if (n) out[0] = apply_binary(kOp, a[0], b[0]);
    return;
  }
  const i64 cols = dims[static_cast<std::size_t>(rank - 1)], rows = n / cols;
  const i64 a_step = a_strides[rank - 1], b_step = b_strides[rank - 1];
#pragma omp parallel for if (n > 65536)
  for (i64 row = 0; row < rows; ++row) {
    i64 ao = 0, bo = 0, rest = row;
    for (int d = rank - 2; d >= 0; --d) {
      const i64 index = rest % dims[static_cast<std::size_t>(d)];
      rest /= dims[static_cast<std::size_t>(d)];
      ao += index * a_strides[d];
      bo += index * b_strides[d];
    }
    float* o = out + row * cols;
    const float *ar = a + ao, *br = b + bo;
    if (a_step == 1 && b_step == 1) {  // a row of each (out may be a's row: same index, no overlap otherwise)
#pragma omp simd
      for (i64 c = 0; c < cols; ++c) o[c] = apply_binary(kOp, ar[c], br[c]);
    } else if (a_step == 1 && b_step == 0) {  // a row and a scalar (a bias column, a per-row factor)
      const float bv = br[0];
#pragma omp simd
      for (i64 c = 0; c < cols; ++c) o[c] = apply_binary(kOp, ar[c], bv);
    } else {
      for (i64 c = 0; c < cols; ++c) o[c] = apply_binary(kOp, ar[c * a_step], br[c * b_step]);
    }
  }
}

}  // namespace

void binary(BinaryOp op, const float* a, const i64* a_strides, const float* b, const i64* b_strides, float* out,
            const i64* shape, int rank) {
  switch (op) {
    case BinaryOp::add: return binary_of<BinaryOp::add>(a, a_strides, b, b_strides, out, shape, rank);
    case BinaryOp::sub: return binary_of<BinaryOp::sub>(a, a_strides, b, b_strides, out, shape, rank);
    case BinaryOp::mul: return binary_of<BinaryOp::mul>(a, a_strides, b, b_strides, out, shape, rank);
    case BinaryOp::div: return binary_of<BinaryOp::div>(a, a_strides, b, b_strides, out, shape, rank);
  }
}

void scale(const float* x, float alpha, float* y, i64 n) {
#pragma omp parallel for if (n > 65536)
  for (i64 i = 0; i < n; ++i) y[i] = alpha * x[i];
}

void unary_forward(UnaryOp op, const float* x, float* y, i64 n) {
  switch (op) {
    case UnaryOp::silu:
#pragma omp parallel for if (n > 16384)
      for (i64 i = 0; i < n; ++i) y[i] = x[i] * sigmoid(x[i]);
      return;
    case UnaryOp::gelu_tanh:
#pragma omp parallel for if (n > 16384)
      for (i64 i = 0; i < n; ++i) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
      }
      return;
    case UnaryOp::gelu_erf:
#pragma omp parallel for if (n > 16384)
      for (i64 i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * std::numbers::sqrt2_v<float> / 2));
      return;
  }
}

void unary_backward(UnaryOp op, const float* x, const float* dy, float* dx, i64 n) {
  switch (op) {
    case UnaryOp::silu:
#pragma omp parallel for if (n > 16384)
      for (i64 i = 0; i < n; ++i) {
        const float s = sigmoid(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
      }
      return;
    case UnaryOp::gelu_tanh:
#pragma omp parallel for if (n > 16384)
      for (i64 i = 0; i < n; ++i) {
        const float v = x[i];
        const float t = std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
        const float dinner = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dinner);
      }
      return;
    case UnaryOp::gelu_erf:
#pragma omp parallel for if (n > 16384)
      for (i64 i = 0; i < n; ++i) {
        const float v = x[i];
        const float cdf = 0.5f * (1.0f + std::erf(v * std::numbers::sqrt2_v<float> / 2));
        const float pdf = std::exp(-0.5f * v * v) * (std::numbers::inv_sqrtpi_v<float> / std::numbers::sqrt2_v<float>);
        dx[i] = dy[i] * (cdf + v * pdf);
      }
      return;
  }
}

// SwiGLU runs in blocks whose sigmoids are computed a vector at a time (vec_math.h). GCC 12 cannot
// see that sigmoid_array fills the block it reads.
constexpr i64 kSigmoidBlock = 1024;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

void swiglu_forward(const float* gate, const float* up, float* out, i64 n) {
#pragma omp parallel for if (n > 16384)
  for (i64 start = 0; start < n; start += kSigmoidBlock) {
    float s[kSigmoidBlock];
    const i64 len = std::min(kSigmoidBlock, n - start);
    sigmoid_array(gate + start, s, len);
    for (i64 j = 0; j < len; ++j) out[start + j] = gate[start + j] * s[j] * up[start + j];
  }
}

namespace {

// d(silu(g) u)/dg and /du times dy over one block, into f32 or rounded to bf16 (Out = uint16_t).
// One loop per set of outputs asked for: a test inside the loop kept GCC from vectorising it.
template <class Out>
void swiglu_backward_block(const float* g, const float* u, const float* d, const float* s, Out* dg, Out* du, i64 len) {
  float gate_grad[kSigmoidBlock], up_grad[kSigmoidBlock];
  float* to_gate = std::is_same_v<Out, float> ? reinterpret_cast<float*>(dg) : gate_grad;
  float* to_up = std::is_same_v<Out, float> ? reinterpret_cast<float*>(du) : up_grad;
  if (dg && du) {
#pragma omp simd
    for (i64 j = 0; j < len; ++j) {
      to_gate[j] = d[j] * u[j] * s[j] * (1.0f + g[j] * (1.0f - s[j]));
      to_up[j] = d[j] * g[j] * s[j];
    }
  } else if (dg) {
#pragma omp simd
    for (i64 j = 0; j < len; ++j) to_gate[j] = d[j] * u[j] * s[j] * (1.0f + g[j] * (1.0f - s[j]));
  } else if (du) {
#pragma omp simd
    for (i64 j = 0; j < len; ++j) to_up[j] = d[j] * g[j] * s[j];
  }
  if constexpr (!std::is_same_v<Out, float>) {
    if (dg) to_bf16(gate_grad, dg, len);
    if (du) to_bf16(up_grad, du, len);
  }
}

template <class Out>
void swiglu_backward_into(const float* gate, const float* up, const float* dy, Out* dgate, Out* dup, i64 n) {
#pragma omp parallel for if (n > 16384)
  for (i64 start = 0; start < n; start += kSigmoidBlock) {
    float s[kSigmoidBlock];
    const i64 len = std::min(kSigmoidBlock, n - start);
    sigmoid_array(gate + start, s, len);
    swiglu_backward_block(gate + start, up + start, dy + start, s, dgate ? dgate + start : nullptr,
                          dup ? dup + start : nullptr, len);
  }
}

}  // namespace

void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, i64 n) {
  swiglu_backward_into(gate, up, dy, dgate, dup, n);
}

void swiglu_backward_bf16(const float* gate, const float* up, const float* dy, std::uint16_t* dgate,
                          std::uint16_t* dup, i64 n) {
  swiglu_backward_into(gate, up, dy, dgate, dup, n);
}
#pragma GCC diagnostic pop

void dropout_mask(float* mask, i64 n, float p, std::uint64_t seed) {
  const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
#pragma omp parallel for if (n > 65536)
  for (i64 i = 0; i < n; ++i) mask[i] = uniform_at(seed, static_cast<std::uint64_t>(i)) < p ? 0.0f : keep_scale;
}

}  // namespace loracpp::backend::cpu
