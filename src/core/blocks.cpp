#include "core/blocks.h"

#include "core/error.h"
#include "core/q4_0.h"
#include "core/q8_0.h"

namespace loracpp {

void quantize_blocks(DType dtype, const float* x, void* blocks, std::int64_t n) {
  switch (dtype) {
    case DType::q8_0: return q8_0::quantize(x, blocks, n);
    case DType::q4_0: return q4_0::quantize(x, blocks, n);
    default: fail("dtype", "{} has no blocks to quantise into", dtype_name(dtype));
  }
}

void dequantize_blocks(DType dtype, const void* blocks, float* x, std::int64_t n) {
  switch (dtype) {
    case DType::q8_0: return q8_0::dequantize(blocks, x, n);
    case DType::q4_0: return q4_0::dequantize(blocks, x, n);
    default: fail("dtype", "{} has no blocks to widen", dtype_name(dtype));
  }
}

}  // namespace loracpp
