#pragma once
// bf16 products whose operands are laid out as pairs of terms, for AVX512-BF16's dot-product
// instruction (vdpbf16ps: each f32 lane adds the products of two bf16 pairs): the fused
// attention's tiles, whose operands are packed once per head rather than by a library on every
// call, and whose causal triangle is skipped in blocks of a few rows.
//
// A pair holds terms 2p (low half) and 2p + 1 (high half) of a sum as one 32-bit word. The left
// operand a(i, p) is read at a[i * row_stride + p * pair_stride], so that a row-major bf16 matrix
// with an even row length is such an operand as it lies (row_stride = length / 2, pair_stride = 1),
// and so is the transpose of one packed by pack_row_pairs (row_stride = 1, pair_stride = its ldo).
// The right operand b is packed in panels of 64 columns, each panel's pairs one after another:
// terms 2p and 2p + 1 of column j are the word b[(j / 64 * height + p) * 64 + j % 64], for a
// height of at least the product's pairs, and columns past n are zero.
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

// Whether this build has the kernel (AVX512-BF16); without, gemm_bf16_pairs is a plain loop over
// the same sums, for tests.
bool bf16_pairs_built();

struct PairsOperand {
  const std::uint32_t* data;  // read a word at a time as bytes (memcpy): it may be bf16 values
  i64 row_stride, pair_stride;
};

// A row-major bf16 matrix whose rows hold `length` values (even) as a left operand.
inline PairsOperand bf16_rows_as_pairs(const std::uint16_t* x, i64 length) {
  return {reinterpret_cast<const std::uint32_t*>(x), length / 2, 1};
}

// The part of a product that a causal mask leaves, in terms of a diagonal d: `columns_to_diagonal`,
// only c[i, j] with j <= i + d is wanted (the rest of a row may be left unwritten past the block
// of columns that holds i + d); `terms_to_diagonal`, a(i, t) is zero for terms t > i + d (a row of
// probabilities); `terms_from_diagonal`, a(i, t) is zero for t < i - d (their transpose).
struct Triangle {
  enum Kind { none, columns_to_diagonal, terms_to_diagonal, terms_from_diagonal } kind = none;
  i64 diagonal = 0;
};

// c[m, n] = alpha * sum over pairs p of a(i, p) . b(p, j) + beta * c, on the calling thread; terms
// a triangle says are zero are skipped, as are columns it says are not wanted.
void gemm_bf16_pairs(i64 m, i64 n, i64 pairs, float alpha, PairsOperand a, const std::uint32_t* b, i64 height,
                     float beta, float* c, i64 ldc, Triangle triangle = {});

constexpr i64 kPanel = 64;  // columns of a packed right operand's panel

// Words of a packed right operand of `height` pairs by n columns.
inline i64 packed_size(i64 height, i64 n) { return (n + kPanel - 1) / kPanel * kPanel * height; }

// x [rows, cols] packed as a right operand whose terms run down its rows: pair q of column c holds
// x[2q, c] and x[2q + 1, c] (zero for a missing last row); height (rows + 1) / 2.
void pack_row_pairs(const std::uint16_t* x, i64 ldx, i64 rows, i64 cols, std::uint32_t* out);

// x [rows, cols] packed as a right operand whose terms run along its rows (x transposed): pair p of
// column r holds x[r, 2p] and x[r, 2p + 1] (zero for a missing last column); height (cols + 1) / 2.
void pack_column_pairs(const std::uint16_t* x, i64 ldx, i64 rows, i64 cols, std::uint32_t* out);

// A tile's rows of x [rows, cols] as pairs down its rows, read as a left operand transposed (its
// row j is x's column j): out[q * cols + j] holds x[2q, j] and x[2q + 1, j] (zero for a missing
// last row); the operand {out, 1, cols}.
void pack_rows_down(const std::uint16_t* x, i64 ldx, i64 rows, i64 cols, std::uint32_t* out);

}  // namespace loracpp::backend::cpu
