#pragma once
// What the CUDA kernel files share: the stream, the cuBLAS handle, error checks, launch shapes.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cuda {

cudaStream_t stream();
cublasHandle_t blas();
void check_cuda(cudaError_t status, const char* what);
void check_launch(const char* kernel);

// The fused attention (attention.cu), for the kernel table.
void attention_forward(const float* q, const float* k, const float* v, const float* mask, float* out, float* lse,
                       const AttentionGeometry& g);
void attention_backward(const float* q, const float* k, const float* v, const float* mask, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttentionGeometry& g);

constexpr int kThreads = 256;
inline unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

// Up to 8 dims of shape and strides, passed to kernels by value.
struct Dims {
  int rank = 0;
  std::int64_t shape[8] = {};
  std::int64_t a[8] = {};
  std::int64_t b[8] = {};
};

}  // namespace loracpp::backend::cuda
