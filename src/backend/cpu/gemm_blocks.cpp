// Products against a weight stored in blocks (q8_0, q4_0). A few rows (a generated token's layers)
// read the weight's blocks in place, each thread streaming one contiguous share of its rows, in f32
// or, asked for q8_rows where the CPU has 8-bit dot products, quantised to 8 bits per run of 32; more
// rows (a prompt, or a gradient times W) widen the weight a slice at a time into f32 and multiply
// the slice through BLAS, or, asked for bf16 products, into bf16 for gemm_bf16 (oneDNN), so that
// no wide copy of the whole weight is ever held.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/block_dot.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_blocks.h"
#include "backend/cpu/vec_math.h"
#include "core/blocks.h"
#include "core/error.h"

namespace loracpp::backend::cpu {

namespace {

// Rows of c up to which the weight is read in place (as product_reading_bf16's kInPlaceRows).
constexpr i64 kInPlaceRows = 8;
// f32 values in one widened slice of the weight: 2 MB, within the L2 and L3 of the CPUs we run on.
constexpr i64 kSliceValues = i64{1} << 19;

template <class Format>
void rows_in_place(bool q8_rows, i64 m, i64 n, i64 k, const float* a, i64 lda, const std::uint8_t* w, float beta,
                   float* c, i64 ldc) {
  const std::size_t stride = static_cast<std::size_t>(k / Format::kBlock) * Format::kBlockBytes;
#if defined(LORACPP_Q8_ROWS)
  Q8Rows quantized;
  if (q8_rows) quantize_q8_rows<Format>(a, lda, m, k, quantized);
#else
  (void)q8_rows;
#endif
#pragma omp parallel if (n * k > (i64{1} << 16))
  {
    const i64 threads = omp_get_num_threads(), share = (n + threads - 1) / threads;
    const i64 j0 = std::min(n, omp_get_thread_num() * share), j1 = std::min(n, j0 + share);
    float sums[kInPlaceRows];
    for (i64 j = j0; j < j1; ++j) {
      const std::uint8_t* row = w + static_cast<std::size_t>(j) * stride;
#if defined(LORACPP_Q8_ROWS)
      if (q8_rows)
        dot_block_rows_q8<Format>(quantized, row, sums);
      else
#endif
        dot_block_rows<Format>(a, lda, m, row, k, sums);
      for (i64 i = 0; i < m; ++i) c[i * ldc + j] = sums[i] + (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]);
    }
  }
}

}  // namespace

bool q8_rows_native() {
#if defined(LORACPP_Q8_ROWS)
  return true;
#else
  return false;
#endif
}

void gemm_blocks(DType w_dtype, BlockProducts products, bool trans_b, i64 m, i64 n, i64 k, const float* a, i64 lda,
                 const void* w, float beta, float* c, i64 ldc) {
  check(is_block_dtype(w_dtype), "gemm_blocks", "the weight must be stored in blocks (q8_0, q4_0), not {}",
        dtype_name(w_dtype));
  const i64 row_values = trans_b ? k : n;  // values in one stored row of w
  const i64 block = dtype_block(w_dtype);
  check(row_values % block == 0, "gemm_blocks", "a {} weight's rows hold whole blocks of {} values, not {}",
        dtype_name(w_dtype), block, row_values);
  if (m == 0 || n == 0) return;
  const auto* blocks = static_cast<const std::uint8_t*>(w);
  if (trans_b && m <= kInPlaceRows) {
    count_gemm(m, n, k);  // the slices below count themselves through gemm
    return with_block_format(w_dtype, [&](auto format) {
      rows_in_place<decltype(format)>(products.q8_rows && k > 0, m, n, k, a, lda, blocks, beta, c, ldc);
    });
  }
  const i64 stored_rows = trans_b ? n : k;
  const std::size_t row_bytes = dtype_bytes(w_dtype, row_values);
  const i64 slice_rows = std::max<i64>(16, kSliceValues / std::max<i64>(row_values, 1));
  const i64 capacity = std::min(stored_rows, slice_rows) * row_values;
  std::vector<float> slice(static_cast<std::size_t>(capacity));
  if (!trans_b && k == 0) gemm(false, false, m, n, 0, 1.0f, a, lda, slice.data(), n, beta, c, ldc);  // c = beta c
  // bf16 products: a rounded once, each slice widened and rounded (the f32 slice is its scratch).
  const bool in_bf16 = products.bf16 && bf16_products_native() && k > 0;
  std::vector<std::uint16_t> a16(in_bf16 ? static_cast<std::size_t>(m * k) : 0);
  std::vector<std::uint16_t> slice16(in_bf16 ? static_cast<std::size_t>(capacity) : 0);
  if (in_bf16) {
#pragma omp parallel for if (m * k > (i64{1} << 16))
    for (i64 i = 0; i < m; ++i) to_bf16(a + i * lda, a16.data() + i * k, k);
  }
  for (i64 r0 = 0; r0 < stored_rows; r0 += slice_rows) {
    const i64 rows = std::min(slice_rows, stored_rows - r0);
#pragma omp parallel for if (rows * row_values > (i64{1} << 16))
    for (i64 r = 0; r < rows; ++r) {
      float* widened = slice.data() + r * row_values;
      dequantize_blocks(w_dtype, blocks + static_cast<std::size_t>(r0 + r) * row_bytes, widened, row_values);
      if (in_bf16) to_bf16(widened, slice16.data() + r * row_values, row_values);
    }
    if (in_bf16) {
      if (trans_b)  // c[:, r0 : r0 + rows] = a slice(rows)ᵀ
        gemm_bf16(true, m, rows, k, 1.0f, a16.data(), k, slice16.data(), k, beta, c + r0, ldc);
      else  // c += a[:, r0 : r0 + rows] slice(rows)
        gemm_bf16(false, m, n, rows, 1.0f, a16.data() + r0, k, slice16.data(), n, r0 == 0 ? beta : 1.0f, c, ldc);
    } else if (trans_b) {
      gemm(false, true, m, rows, k, 1.0f, a, lda, slice.data(), k, beta, c + r0, ldc);
    } else {
      gemm(false, false, m, n, rows, 1.0f, a + r0, lda, slice.data(), n, r0 == 0 ? beta : 1.0f, c, ldc);
    }
  }
}

}  // namespace loracpp::backend::cpu
