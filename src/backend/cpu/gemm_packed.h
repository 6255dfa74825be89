#pragma once
// A blocked matrix product of our own, for operands OpenBLAS cannot take as they lie: each is f32
// or bf16, and a bf16 one is widened while it is packed into the blocks the kernel reads, so that
// it is never written out whole in f32.
#include <cstdint>

#include "backend/kernels.h"
#include "core/dtype.h"

namespace loracpp::backend::cpu {

// One operand of packed_gemm: values of `dtype` (f32 or bf16), row-major with leading dimension
// `ld`, read transposed when `trans` (a as [k, m], b as [n, k]).
struct PackedOperand {
  const void* data;
  DType dtype;
  i64 ld;
  bool trans;
};

// c[m, n] = alpha op(a)[m, k] op(b)[k, n] + beta c, accumulated in f32; c is not read where beta
// is 0. With `parallel`, OpenMP's threads share the work (call it from outside a team); without,
// it runs on the calling thread alone.
void packed_gemm(i64 m, i64 n, i64 k, float alpha, const PackedOperand& a, const PackedOperand& b, float beta,
                 float* c, i64 ldc, bool parallel);

}  // namespace loracpp::backend::cpu
