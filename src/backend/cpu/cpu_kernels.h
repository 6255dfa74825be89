#pragma once
// The CPU backend: one definition per kernel listed in backend/kernels.h, declared from that list.
#include "backend/kernels.h"

namespace loracpp::backend::cpu {
#define LORACPP_KERNEL_DECLARE(name, ...) signature::name name;
LORACPP_KERNELS(LORACPP_KERNEL_DECLARE)
#undef LORACPP_KERNEL_DECLARE

// Whether gemm's large f32 products go to oneDNN's sgemm rather than OpenBLAS (gemm.cpp says when).
bool f32_products_through_onednn();

// An f32 product (as gemm, row-major) for one member of an OpenMP team, on the calling thread
// alone: oneDNN's sgemm where f32_products_through_onednn(), which runs single-threaded inside a
// parallel region, else OpenBLAS, whose own threads the caller must hold at one.
void gemm_f32_serial(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                     const float* b, i64 ldb, float beta, float* c, i64 ldc);
}  // namespace loracpp::backend::cpu
