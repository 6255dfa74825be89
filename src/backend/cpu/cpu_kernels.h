#pragma once
// The CPU backend: one definition per kernel listed in backend/kernels.h, declared from that list.
#include "backend/kernels.h"

namespace loracpp::backend::cpu {
#define LORACPP_KERNEL_DECLARE(name, ...) signature::name name;
LORACPP_KERNELS(LORACPP_KERNEL_DECLARE)
#undef LORACPP_KERNEL_DECLARE

// Whether gemm's large f32 products go to oneDNN's sgemm rather than OpenBLAS (gemm.cpp says when).
bool f32_products_through_onednn();
}  // namespace loracpp::backend::cpu
