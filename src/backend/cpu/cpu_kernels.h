#pragma once
// The CPU backend: one definition per kernel listed in backend/kernels.h, declared from that list.
#include "backend/kernels.h"

namespace loracpp::backend::cpu {
#define LORACPP_KERNEL_DECLARE(name, ...) signature::name name;
LORACPP_KERNELS(LORACPP_KERNEL_DECLARE)
#undef LORACPP_KERNEL_DECLARE

// Whether gemm's large f32 products go to oneDNN's sgemm rather than OpenBLAS (gemm.cpp says when).
bool f32_products_through_onednn();

// An f32 product (as gemm, row-major) through the library chosen for large ones: oneDNN's sgemm
// where f32_products_through_onednn(), else OpenBLAS. Called by a member of an OpenMP team it runs
// on the calling thread alone: oneDNN's sgemm does so inside a parallel region, and OpenBLAS does
// where the caller holds its own threads at one.
void f32_library_gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                      const float* b, i64 ldb, float beta, float* c, i64 ldc);
}  // namespace loracpp::backend::cpu
