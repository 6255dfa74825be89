// The CUDA kernels: cuBLAS for products (bf16 on tensor cores with f32 accumulation), and one
// kernel per element-wise or row-wise operation, matching the CPU kernels' definitions
// (backend/kernels.h) so the op harness can compare the two. One block per row for row
// reductions; grid-stride loops elsewhere.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.cuh"
#include "core/counter_hash.h"
#include "core/error.h"

namespace loracpp::backend::cuda {

namespace {

using i64 = std::int64_t;

#define LORACPP_GRID_STRIDE(i, n) \
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<i64>(gridDim.x) * blockDim.x)

// Sum over the block of one value per thread (blockDim.x == kThreads).
__device__ double block_sum(double value) {
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = partial[0];
  __syncthreads();
  return total;
}

__device__ float block_max(float value) {
  __shared__ float partial[kThreads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] = fmaxf(partial[threadIdx.x], partial[threadIdx.x + stride]);
    __syncthreads();
  }
  const float total = partial[0];
  __syncthreads();
  return total;
}

__device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// ---- conversion and copies ----
__device__ double load_as_double(const void* p, DType t, i64 i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::i32: return static_cast<const std::int32_t*>(p)[i];
    case DType::i64: return static_cast<double>(static_cast<const i64*>(p)[i]);
    case DType::q8_0:
    case DType::q4_0: break;  // blocks: refused by convert below
  }
  return 0;
}

__device__ void store_from_double(void* p, DType t, i64 i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); return;
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); return;
    case DType::f16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); return;
    case DType::i32: static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(v); return;
    case DType::i64: static_cast<i64*>(p)[i] = static_cast<i64>(v); return;
    case DType::q8_0:
    case DType::q4_0: return;  // blocks: refused by convert below
  }
}

// The conversions of every bf16 product, without the general kernel's per-element switch.
__global__ void f32_to_bf16_kernel(const float* src, __nv_bfloat16* dst, i64 n) {
  LORACPP_GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void bf16_to_f32_kernel(const __nv_bfloat16* src, float* dst, i64 n) {
  LORACPP_GRID_STRIDE(i, n) dst[i] = __bfloat162float(src[i]);
}

__global__ void convert_kernel(const void* src, DType s, void* dst, DType d, i64 n) {
  LORACPP_GRID_STRIDE(i, n) store_from_double(dst, d, i, load_as_double(src, s, i));
}

// The element offsets, through strides a and b, of the i-th element of dims.shape in row-major order.
__device__ void strided_offsets(const Dims& dims, i64 i, i64& a, i64& b) {
  a = 0;
  b = 0;
  for (int d = dims.rank - 1; d >= 0; --d) {
    const i64 index = i % dims.shape[d];
    i /= dims.shape[d];
    a += index * dims.a[d];
    b += index * dims.b[d];
  }
}

__global__ void copy_strided_kernel(const char* src, char* dst, Dims dims, i64 n, int element) {
  LORACPP_GRID_STRIDE(i, n) {
    i64 from = 0, to = 0;
    strided_offsets(dims, i, from, to);
    for (int byte = 0; byte < element; ++byte) dst[to * element + byte] = src[from * element + byte];
  }
}

// ---- element-wise ----

__global__ void binary_kernel(BinaryOp op, const float* a, const float* b, float* out, Dims dims, i64 n) {
  LORACPP_GRID_STRIDE(i, n) {
    i64 ai = 0, bi = 0;
    strided_offsets(dims, i, ai, bi);
    out[i] = apply_binary(op, a[ai], b[bi]);
  }
}

// The common case: both operands dense in the output's order, no index arithmetic.
__global__ void binary_dense_kernel(BinaryOp op, const float* a, const float* b, float* out, i64 n) {
  LORACPP_GRID_STRIDE(i, n) out[i] = apply_binary(op, a[i], b[i]);
}

__global__ void scale_kernel(const float* x, float alpha, float* y, i64 n) { LORACPP_GRID_STRIDE(i, n) y[i] = alpha * x[i]; }

__global__ void unary_forward_kernel(UnaryOp op, const float* x, float* y, i64 n) {
  LORACPP_GRID_STRIDE(i, n) {
    const float v = x[i];
    switch (op) {
      case UnaryOp::silu: y[i] = v * sigmoid(v); break;
      case UnaryOp::gelu_tanh: y[i] = 0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + kGeluCubic * v * v * v))); break;
      case UnaryOp::gelu_erf: y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); break;
    }
  }
}

__global__ void unary_backward_kernel(UnaryOp op, const float* x, const float* dy, float* dx, i64 n) {
  LORACPP_GRID_STRIDE(i, n) {
    const float v = x[i];
    switch (op) {
      case UnaryOp::silu: {
        const float s = sigmoid(v);
        dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
        break;
      }
      case UnaryOp::gelu_tanh: {
        const float t = tanhf(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
        const float dinner = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dinner);
        break;
      }
      case UnaryOp::gelu_erf: {
        const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
        break;
      }
    }
  }
}

__global__ void swiglu_forward_kernel(const float* gate, const float* up, float* out, i64 n) {
  LORACPP_GRID_STRIDE(i, n) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <class Out>  // float, or __nv_bfloat16 for gradients rounded for bf16 products
__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* dy, Out* dgate, Out* dup,
                                       i64 n) {
  LORACPP_GRID_STRIDE(i, n) {
    const float s = sigmoid(gate[i]);
    if (dgate) dgate[i] = Out(dy[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s)));
    if (dup) dup[i] = Out(dy[i] * gate[i] * s);
  }
}

__global__ void dropout_kernel(float* mask, i64 n, float p, std::uint64_t seed) {
  const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  LORACPP_GRID_STRIDE(i, n) mask[i] = uniform_at(seed, static_cast<std::uint64_t>(i)) < p ? 0.0f : keep_scale;
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, i64 n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float bc1, float bc2) {
  const float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2), decay = 1.0f - lr * weight_decay;
  LORACPP_GRID_STRIDE(i, n) {
    const float g = grad[i];
    param[i] *= decay;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    param[i] -= step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
  }
}

__global__ void rope_kernel(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq,
                            i64 pos_offset, RopeLayout layout, bool inverse) {
  const i64 half = head_dim / 2;
  LORACPP_GRID_STRIDE(idx, outer * seq * half) {
    const i64 i = idx % half, row = idx / half, t = row % seq;
    const float angle = static_cast<float>(pos_offset + t) * inv_freq[i];
    const float c = cosf(angle), s = inverse ? -sinf(angle) : sinf(angle);
    const i64 a = layout == RopeLayout::half ? i : 2 * i, b = layout == RopeLayout::half ? i + half : 2 * i + 1;
    const float x0 = x[row * head_dim + a], x1 = x[row * head_dim + b];
    y[row * head_dim + a] = x0 * c - x1 * s;
    y[row * head_dim + b] = x0 * s + x1 * c;
  }
}

template <class T>
__global__ void embedding_forward_kernel(const T* weight, const i64* ids, T* out, i64 n, i64 dim) {
  LORACPP_GRID_STRIDE(i, n * dim) out[i] = weight[ids[i / dim] * dim + i % dim];
}

__global__ void embedding_backward_kernel(const float* dy, const i64* ids, float* dweight, i64 n, i64 dim) {
  LORACPP_GRID_STRIDE(i, n * dim) atomicAdd(&dweight[ids[i / dim] * dim + i % dim], dy[i]);
}

// ---- one block per row ----
__global__ void sum_rows_kernel(const float* x, float* out, i64 cols) {
  const float* row = x + blockIdx.x * cols;
  double total = 0;
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) total += row[c];
  total = block_sum(total);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(total);
}

__global__ void sum_squares_kernel(const float* x, i64 n, double* total) {
  double local = 0;
  LORACPP_GRID_STRIDE(i, n) local += static_cast<double>(x[i]) * x[i];
  local = block_sum(local);
  if (threadIdx.x == 0) atomicAdd(total, local);
}

__global__ void rms_norm_forward_kernel(const float* x, const float* w, float* y, float* rstd, i64 dim, float eps) {
  const float* xr = x + blockIdx.x * dim;
  double sum = 0;
  for (i64 d = threadIdx.x; d < dim; d += blockDim.x) sum += static_cast<double>(xr[d]) * xr[d];
  sum = block_sum(sum);
  const float s = static_cast<float>(1.0 / sqrt(sum / static_cast<double>(dim) + eps));
  if (threadIdx.x == 0) rstd[blockIdx.x] = s;
  for (i64 d = threadIdx.x; d < dim; d += blockDim.x) y[blockIdx.x * dim + d] = xr[d] * s * w[d];
}

__global__ void rms_norm_backward_kernel(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                         float* dw, i64 dim) {
  const float* xr = x + blockIdx.x * dim;
  const float* gr = dy + blockIdx.x * dim;
  double dot = 0;
  for (i64 d = threadIdx.x; d < dim; d += blockDim.x) dot += static_cast<double>(gr[d]) * w[d] * xr[d];
  dot = block_sum(dot);
  const float s = rstd[blockIdx.x];
  const float c = static_cast<float>(dot / static_cast<double>(dim)) * s * s;
  if (dx)
    for (i64 d = threadIdx.x; d < dim; d += blockDim.x) dx[blockIdx.x * dim + d] = s * (gr[d] * w[d] - xr[d] * c);
}

// dw[d] += sum over rows of dy x rstd: a thread per column and chunk of rows, one atomic per chunk
// (an atomic per element would queue every row on the same dim addresses).
constexpr i64 kNormRowsPerChunk = 64;
__global__ void rms_norm_weight_grad_kernel(const float* x, const float* rstd, const float* dy, float* dw, i64 rows,
                                            i64 dim) {
  const i64 d = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x;
  if (d >= dim) return;
  const i64 r0 = blockIdx.y * kNormRowsPerChunk, r1 = min(rows, r0 + kNormRowsPerChunk);
  float sum = 0;
  for (i64 r = r0; r < r1; ++r) sum += dy[r * dim + d] * x[r * dim + d] * rstd[r];
  atomicAdd(&dw[d], sum);
}

__global__ void softmax_forward_kernel(const float* x, float* y, i64 cols) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float max = -INFINITY;
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) max = fmaxf(max, xr[c]);
  max = block_max(max);
  double sum = 0;
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) {
    yr[c] = expf(xr[c] - max);
    sum += yr[c];
  }
  const float inv = static_cast<float>(1.0 / block_sum(sum));
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) yr[c] *= inv;
}

__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx, i64 cols) {
  const float* yr = y + blockIdx.x * cols;
  const float* gr = dy + blockIdx.x * cols;
  double dot = 0;
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) dot += static_cast<double>(yr[c]) * gr[c];
  const float d = static_cast<float>(block_sum(dot));
  for (i64 c = threadIdx.x; c < cols; c += blockDim.x) dx[blockIdx.x * cols + c] = yr[c] * (gr[c] - d);
}

// A row's log-sum-exp, for every thread of the block: one pass for the max, one for the sum.
__device__ float row_log_sum_exp(const float* row, i64 vocab) {
  float max = -INFINITY;
  for (i64 v = threadIdx.x; v < vocab; v += blockDim.x) max = fmaxf(max, row[v]);
  max = block_max(max);
  double sum = 0;
  for (i64 v = threadIdx.x; v < vocab; v += blockDim.x) sum += expf(row[v] - max);
  return max + static_cast<float>(log(block_sum(sum)));
}

// The fused cross-entropy: logits never leave the row.
__global__ void cross_entropy_forward_kernel(const float* logits, const i64* targets, float* loss, float* lse, i64 vocab,
                                             i64 ignore_index) {
  const float* row = logits + blockIdx.x * vocab;
  const float l = row_log_sum_exp(row, vocab);
  if (threadIdx.x == 0) {
    lse[blockIdx.x] = l;
    const i64 t = targets[blockIdx.x];
    loss[blockIdx.x] = t == ignore_index ? 0.0f : l - row[t];
  }
}

__global__ void cross_entropy_backward_kernel(const float* logits, const i64* targets, const float* lse, float grad_scale,
                                              float* dlogits, i64 vocab, i64 ignore_index) {
  const float* row = logits + blockIdx.x * vocab;
  float* out = dlogits + blockIdx.x * vocab;
  const i64 t = targets[blockIdx.x];
  for (i64 v = threadIdx.x; v < vocab; v += blockDim.x)
    out[v] = t == ignore_index ? 0.0f : expf(row[v] - lse[blockIdx.x]) * grad_scale - (v == t ? grad_scale : 0.0f);
}

// The forward and backward at once: the row's log-sum-exp, then its gradient from it, in f32
// (dlogits may be logits) or rounded to bf16. The target's logit is read before any thread
// writes: the reductions' barriers lie between.
template <class Out>
__global__ void cross_entropy_with_grad_kernel(const float* logits, const i64* targets, float* loss, float* lse,
                                               float grad_scale, Out* dlogits, i64 vocab, i64 ignore_index) {
  const float* row = logits + blockIdx.x * vocab;
  Out* out = dlogits + blockIdx.x * vocab;
  const i64 t = targets[blockIdx.x];
  const float target_logit = t == ignore_index ? 0.0f : row[t];
  const float l = row_log_sum_exp(row, vocab);
  if (threadIdx.x == 0) {
    lse[blockIdx.x] = l;
    loss[blockIdx.x] = t == ignore_index ? 0.0f : l - target_logit;
  }
  for (i64 v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float g = t == ignore_index ? 0.0f : expf(row[v] - l) * grad_scale - (v == t ? grad_scale : 0.0f);
    if constexpr (sizeof(Out) == 2) {
      out[v] = __float2bfloat16(g);
    } else {
      out[v] = g;
    }
  }
}

Dims make_dims(const i64* shape, int rank, const i64* a, const i64* b) {
  if (rank > 8) throw Error("[cuda] tensors of more than 8 dims are not supported");
  Dims d;
  d.rank = rank;
  for (int i = 0; i < rank; ++i) {
    d.shape[i] = shape[i];
    d.a[i] = a[i];
    d.b[i] = b ? b[i] : 0;
  }
  return d;
}

// Whether strides walk shape's elements in row-major order without gaps (sizes of 1 skipped).
bool dense(const i64* shape, int rank, const i64* strides) {
  i64 expected = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    if (strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

i64 numel(const i64* shape, int rank) {
  i64 n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

// ---- the table's entries (host functions with the kernels.h signatures) ----
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, i64 n) {
  if (n == 0) return;
  check(!is_block_dtype(src_dtype) && !is_block_dtype(dst_dtype), "convert",
        "{} to {}: block dtypes (q8_0, q4_0) have no CUDA implementation; their weights are for the CPU's "
        "generation path", dtype_name(src_dtype), dtype_name(dst_dtype));
  if (src_dtype == DType::f32 && dst_dtype == DType::bf16) {
    f32_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(static_cast<const float*>(src),
                                                                 static_cast<__nv_bfloat16*>(dst), n);
  } else if (src_dtype == DType::bf16 && dst_dtype == DType::f32) {
    bf16_to_f32_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(static_cast<const __nv_bfloat16*>(src),
                                                                 static_cast<float*>(dst), n);
  } else {
    convert_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(src, src_dtype, dst, dst_dtype, n);
  }
  check_launch("convert");
}

void copy_strided(const void* src, const i64* src_strides, void* dst, const i64* dst_strides, const i64* shape, int rank,
                  std::size_t element_size) {
  const i64 n = numel(shape, rank);
  if (n == 0) return;
  copy_strided_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(static_cast<const char*>(src), static_cast<char*>(dst),
                                                                 make_dims(shape, rank, src_strides, dst_strides), n,
                                                                 static_cast<int>(element_size));
  check_launch("copy_strided");
}

// Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: cuBLAS gets the operands swapped.
void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
          i64 ldb, float beta, float* c, i64 ldc) {
  count_gemm(m, n, k);
  if (m == 0 || n == 0) return;
  if (cublasSgemm(blas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                  static_cast<int>(m), static_cast<int>(k), &alpha, b, static_cast<int>(ldb), a, static_cast<int>(lda),
                  &beta, c, static_cast<int>(ldc)) != CUBLAS_STATUS_SUCCESS)
    throw Error("[gemm] cuBLAS sgemm failed");
}

void gemm_bf16(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda, const std::uint16_t* b,
               i64 ldb, float beta, float* c, i64 ldc) {
  count_gemm(m, n, k);
  if (m == 0 || n == 0) return;
  if (cublasGemmEx(blas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                   static_cast<int>(k), &alpha, b, CUDA_R_16BF, static_cast<int>(ldb), a, CUDA_R_16BF,
                   static_cast<int>(lda), &beta, c, CUDA_R_32F, static_cast<int>(ldc), CUBLAS_COMPUTE_32F,
                   CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
    throw Error("[gemm_bf16] cuBLAS GemmEx failed");
}

void binary(BinaryOp op, const float* a, const i64* a_strides, const float* b, const i64* b_strides, float* out,
            const i64* shape, int rank) {
  const i64 n = numel(shape, rank);
  if (n == 0) return;
  if (dense(shape, rank, a_strides) && dense(shape, rank, b_strides)) {
    binary_dense_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(op, a, b, out, n);
    check_launch("binary");
    return;
  }
  binary_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(op, a, b, out, make_dims(shape, rank, a_strides, b_strides), n);
  check_launch("binary");
}

void scale(const float* x, float alpha, float* y, i64 n) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, alpha, y, n);
  check_launch("scale");
}

void unary_forward(UnaryOp op, const float* x, float* y, i64 n) {
  if (n == 0) return;
  unary_forward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(op, x, y, n);
  check_launch("unary_forward");
}

void unary_backward(UnaryOp op, const float* x, const float* dy, float* dx, i64 n) {
  if (n == 0) return;
  unary_backward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(op, x, dy, dx, n);
  check_launch("unary_backward");
}

void sum_rows(const float* x, float* out, i64 rows, i64 cols) {
  if (rows == 0) return;
  sum_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(x, out, cols);
  check_launch("sum_rows");
}

double sum_squares(const float* x, i64 n) {
  double* total = static_cast<double*>(allocate(sizeof(double)));
  fill_zero(total, sizeof(double));
  if (n > 0) sum_squares_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, n, total);
  check_launch("sum_squares");
  double host = 0;
  copy_to_host(&host, total, sizeof(double));
  release(total, sizeof(double));
  return host;
}

void embedding_forward(const void* weight, const i64* ids, void* out, i64 n, i64 dim, std::size_t element_size) {
  if (n * dim == 0) return;
  auto launch = [&](auto element) {  // rows moved as elements of their size: the bits are kept as they are
    using T = decltype(element);
    embedding_forward_kernel<T><<<blocks_for(n * dim), kThreads, 0, stream()>>>(static_cast<const T*>(weight), ids,
                                                                                  static_cast<T*>(out), n, dim);
  };
  switch (element_size) {
    case 2: launch(std::uint16_t{}); break;
    case 4: launch(std::uint32_t{}); break;
    case 8: launch(std::uint64_t{}); break;
    default: throw Error("[embedding_forward] rows must be of 2-, 4- or 8-byte elements");
  }
  check_launch("embedding_forward");
}

void embedding_backward(const float* dy, const i64* ids, float* dweight, i64 n, i64 dim) {
  if (n * dim == 0) return;
  embedding_backward_kernel<<<blocks_for(n * dim), kThreads, 0, stream()>>>(dy, ids, dweight, n, dim);
  check_launch("embedding_backward");
}

void rms_norm_forward(const float* x, const float* w, float* y, float* rstd, i64 rows, i64 dim, float eps) {
  if (rows == 0) return;
  rms_norm_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(x, w, y, rstd, dim, eps);
  check_launch("rms_norm_forward");
}

void rms_norm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw, i64 rows,
                       i64 dim) {
  if (rows == 0) return;
  if (dx) rms_norm_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(x, w, rstd, dy, dx, dw, dim);
  if (dw) {
    const dim3 grid(static_cast<unsigned>((dim + kThreads - 1) / kThreads),
                    static_cast<unsigned>((rows + kNormRowsPerChunk - 1) / kNormRowsPerChunk));
    rms_norm_weight_grad_kernel<<<grid, kThreads, 0, stream()>>>(x, rstd, dy, dw, rows, dim);
  }
  check_launch("rms_norm_backward");
}

void softmax_forward(const float* x, float* y, i64 rows, i64 cols) {
  if (rows == 0) return;
  softmax_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(x, y, cols);
  check_launch("softmax_forward");
}

void softmax_backward(const float* y, const float* dy, float* dx, i64 rows, i64 cols) {
  if (rows == 0) return;
  softmax_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(y, dy, dx, cols);
  check_launch("softmax_backward");
}

void rope(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq, i64 pos_offset,
          RopeLayout layout, bool inverse) {
  const i64 n = outer * seq * (head_dim / 2);
  if (n == 0) return;
  rope_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, y, outer, seq, head_dim, inv_freq, pos_offset, layout, inverse);
  check_launch("rope");
}

void swiglu_forward(const float* gate, const float* up, float* out, i64 n) {
  if (n == 0) return;
  swiglu_forward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(gate, up, out, n);
  check_launch("swiglu_forward");
}

void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, i64 n) {
  if (n == 0) return;
  swiglu_backward_kernel<float><<<blocks_for(n), kThreads, 0, stream()>>>(gate, up, dy, dgate, dup, n);
  check_launch("swiglu_backward");
}

void swiglu_backward_bf16(const float* gate, const float* up, const float* dy, std::uint16_t* dgate,
                          std::uint16_t* dup, i64 n) {
  if (n == 0) return;
  swiglu_backward_kernel<__nv_bfloat16><<<blocks_for(n), kThreads, 0, stream()>>>(
      gate, up, dy, reinterpret_cast<__nv_bfloat16*>(dgate), reinterpret_cast<__nv_bfloat16*>(dup), n);
  check_launch("swiglu_backward_bf16");
}

void cross_entropy_forward(const float* logits, const i64* targets, float* loss, float* lse, i64 rows, i64 vocab,
                           i64 ignore_index) {
  if (rows == 0) return;
  cross_entropy_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(logits, targets, loss, lse, vocab,
                                                                                       ignore_index);
  check_launch("cross_entropy_forward");
}

void cross_entropy_backward(const float* logits, const i64* targets, const float* lse, float grad_scale, float* dlogits,
                            i64 rows, i64 vocab, i64 ignore_index) {
  if (rows == 0) return;
  cross_entropy_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(logits, targets, lse, grad_scale,
                                                                                        dlogits, vocab, ignore_index);
  check_launch("cross_entropy_backward");
}

void cross_entropy_with_grad(const float* logits, const i64* targets, float* loss, float* lse, float grad_scale,
                             float* dlogits, i64 rows, i64 vocab, i64 ignore_index) {
  if (rows == 0) return;
  cross_entropy_with_grad_kernel<float><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
      logits, targets, loss, lse, grad_scale, dlogits, vocab, ignore_index);
  check_launch("cross_entropy_with_grad");
}

void cross_entropy_with_bf16_grad(const float* logits, const i64* targets, float* loss, float* lse, float grad_scale,
                                  std::uint16_t* dlogits, i64 rows, i64 vocab, i64 ignore_index) {
  if (rows == 0) return;
  cross_entropy_with_grad_kernel<__nv_bfloat16><<<static_cast<unsigned>(rows), kThreads, 0, stream()>>>(
      logits, targets, loss, lse, grad_scale, reinterpret_cast<__nv_bfloat16*>(dlogits), vocab, ignore_index);
  check_launch("cross_entropy_with_bf16_grad");
}

void dropout_mask(float* mask, i64 n, float p, std::uint64_t seed) {
  if (n == 0) return;
  dropout_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(mask, n, p, seed);
  check_launch("dropout_mask");
}

void adamw_update(float* param, const float* grad, float* m, float* v, i64 n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, float bias_correction1, float bias_correction2) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                                         bias_correction1, bias_correction2);
  check_launch("adamw_update");
}

}  // namespace

void fill_table(KernelTable& t) {
  t.convert = &convert;
  t.copy_strided = &copy_strided;
  t.gemm = &gemm;
  t.gemm_bf16 = &gemm_bf16;
  t.binary = &binary;
  t.scale = &scale;
  t.unary_forward = &unary_forward;
  t.unary_backward = &unary_backward;
  t.sum_rows = &sum_rows;
  t.sum_squares = &sum_squares;
  t.embedding_forward = &embedding_forward;
  t.embedding_backward = &embedding_backward;
  t.rms_norm_forward = &rms_norm_forward;
  t.rms_norm_backward = &rms_norm_backward;
  t.softmax_forward = &softmax_forward;
  t.softmax_backward = &softmax_backward;
  t.rope = &rope;
  t.swiglu_forward = &swiglu_forward;
  t.swiglu_backward = &swiglu_backward;
  t.swiglu_backward_bf16 = &swiglu_backward_bf16;
  t.cross_entropy_forward = &cross_entropy_forward;
  t.cross_entropy_backward = &cross_entropy_backward;
  t.cross_entropy_with_grad = &cross_entropy_with_grad;
  t.cross_entropy_with_bf16_grad = &cross_entropy_with_bf16_grad;
  t.dropout_mask = &dropout_mask;
  t.adamw_update = &adamw_update;
  t.attention_forward = &attention_forward;  // for the shapes attention_fits takes
  t.attention_backward = &attention_backward;
  // Not yet on CUDA: layer norm, convolution and pooling, SGD; their slots stay null and say so
  // when used.
}

}  // namespace loracpp::backend::cuda
