#pragma once
// bf16 products with a short inner dimension (a LoRA branch's rank-r expansions t Bᵀ and u A, added
// into the frozen product's output) through AVX512-BF16's dot-product instruction, where the build
// targets it (gemm_bf16_short.cpp).
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

// Inner dimensions up to this take the kernel: a LoRA rank.
constexpr i64 kShortInner = 32;

// c[m, n] = alpha a[m, k] op(b)[k, n] + beta c in f32 (a row-major; b as gemm_bf16 takes it) when
// 0 < k <= kShortInner and the build has the instruction; returns false, with c untouched, for
// any other product.
bool gemm_bf16_short(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                     const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);

// The same on the calling thread alone (a member of an OpenMP team multiplying its own block).
bool gemm_bf16_short_serial(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                            const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc);

}  // namespace loracpp::backend::cpu
