#pragma once
// A bf16 product for code that already runs inside an OpenMP team (the fused attention's tiles).
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

#if defined(LORACPP_HAVE_ONEDNN)
// c[m,n] = alpha * op(a)[m,k] op(b)[k,n] + beta * c, bf16 operands and f32 accumulation through
// oneDNN, computed on the calling thread alone with that thread's own primitives and stream; op
// reads its operand transposed (a as [k,m], b as [n,k]) when its flag is set.
void gemm_bf16_serial(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a,
                      i64 lda, const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);
#endif

}  // namespace loracpp::backend::cpu
