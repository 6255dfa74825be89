#pragma once
// The block dtypes' formats behind one call each: q8_0 (core/q8_0.h) and q4_0 (core/q4_0.h).
#include <cstdint>

#include "core/dtype.h"

namespace loracpp {

// Quantises n values (whole blocks) into blocks of `dtype`; throws for a dtype without blocks.
void quantize_blocks(DType dtype, const float* x, void* blocks, std::int64_t n);
// Widens n values (whole blocks) from blocks of `dtype`; throws for a dtype without blocks.
void dequantize_blocks(DType dtype, const void* blocks, float* x, std::int64_t n);

}  // namespace loracpp
