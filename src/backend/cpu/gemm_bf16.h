#pragma once
// bf16 products beyond the gemm_bf16 kernel: whether this CPU multiplies bf16 natively, and a
// product for code that already runs inside an OpenMP team (the fused attention's tiles).
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

// Whether bf16 products run natively here (oneDNN on AVX512-BF16 and the like), asked once. Where
// they do not, bf16 operands are widened to f32 as our packed kernel packs them: the same values,
// at the f32 rate, so a caller that holds its operands in f32 as well does better to use those.
bool bf16_products_native();

// gemm_bf16 where bf16 products are not native: a few rows of a read b's values in place, a short
// inner dimension (a rank-k update) widens its small operands for our f32 kernel, and any other
// product widens the operands as our packed kernel packs them. Exact products, f32 sums.
void gemm_bf16_widened(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                       const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);

// c[m,n] = alpha * op(a)[m,k] op(b)[k,n] + beta * c, bf16 operands and f32 accumulation, computed
// on the calling thread alone (through that thread's own oneDNN primitives and stream where the
// products are native); op reads its operand transposed (a as [k,m], b as [n,k]) when its flag is set.
void gemm_bf16_serial(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a,
                      i64 lda, const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);

}  // namespace loracpp::backend::cpu
