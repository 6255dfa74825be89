#pragma once
// bf16 products with at most 16 columns (a LoRA branch's x Aᵀ and g B) through AVX512-BF16's
// dot-product instruction, where the build targets it (gemm_bf16_narrow.cpp).
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

// c[m, n] = alpha a[m, k] op(b)[k, n] + beta c in f32 (a row-major; b as gemm_bf16 takes it) when
// n <= 16, k > 0 and the build has the instruction; returns false, with c untouched, for any other
// product.
bool gemm_bf16_narrow(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                      const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);

}  // namespace loracpp::backend::cpu
