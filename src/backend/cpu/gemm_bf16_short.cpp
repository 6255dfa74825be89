// bf16 products with a short inner dimension: a LoRA branch's rank-r expansions, s t Bᵀ into the
// frozen product's output y and s u A into the input gradient dx. In f32 (our rank update in
// gemm.cpp) each element of c costs r multiply-adds of 16 lanes; here AVX512-BF16's dot-product
// instruction (vdpbf16ps: each lane adds two bf16 products into f32) takes terms p and p + 1 at
// once, so half the instructions for the same c, which is read and written once either way. b is
// packed once in blocks of kBlock columns, each block's pairs of terms contiguous (1.5 KiB at
// r = 16, in L1 for a whole group of rows), the last block zero-padded; a group's rows of a are
// copied whole as 32-bit pairs of terms (the last pair's second term zero for odd k), and each
// pair is broadcast into the instruction for eight rows of c at a time, which share each load of b.
// With only r / 2 instructions per vector of c before it is read and written, the kernel runs at
// about half of oneDNN's rate of these instructions: on a Zen 5, [512, 288] at r = 16 took 25 us
// with 4 rows by 64 columns a block and the pairs a loop, 22 us with 8 rows by 48 columns and the
// pairs unrolled (a read and write of c alone: 6 us).
#include "backend/cpu/gemm_bf16_short.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

// GCC 12 reports its own AVX-512 headers' undefined-vector idiom as (maybe) uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace loracpp::backend::cpu {

#if defined(__AVX512BF16__)
namespace {

constexpr i64 kLanes = 16;
constexpr int kVectors = 3;                // vectors of f32 per block of c's columns
constexpr i64 kBlock = kVectors * kLanes;  // columns of c per block (48: no padding at 288, 576, 768)
constexpr i64 kGroupRows = 16;             // rows of c per piece of work
constexpr int kBlockRows = 8;              // rows of c sharing each load of the block's pairs
// Multiply-adds below which a product stays on the calling thread.
constexpr i64 kThreadedWork = i64{1} << 18;

// c[i, j0 .. j0 + cols) for R rows from row i: alpha times each row's pairs against the block's,
// plus beta c; each of the block's vectors, loaded once per pair of terms, serves all R rows (24
// accumulators, 3 vectors of b and a broadcast: 28 of the 32 registers). Pairs is a template
// argument where it is a LoRA rank's (4 or 8 pairs: r = 8 or 16), so the loop unrolls whole, or 0
// for any other count, given as `pairs`. Lanes past `cols` are neither read nor written.
template <int R, int Pairs>
inline void rows_block(const std::uint32_t (*a_pairs)[kShortInner / 2], i64 pairs, const std::uint32_t* block, i64 cols,
                       float alpha, float beta, float* c, i64 ldc) {
  if constexpr (Pairs > 0) pairs = Pairs;
  __m512 acc[R][kVectors];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (i64 q = 0; q < pairs; ++q, block += kBlock) {
    __m512bh b[kVectors];
    for (int v = 0; v < kVectors; ++v) b[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(block + kLanes * v));
    for (int r = 0; r < R; ++r) {
      const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a_pairs[r][q])));
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int v = 0; v < kVectors; ++v) {
    const i64 lanes = std::min(kLanes, cols - kLanes * v);
    if (lanes <= 0) break;
    const __mmask16 mask = lanes == kLanes ? __mmask16(0xffff) : static_cast<__mmask16>((1u << lanes) - 1);
    for (int r = 0; r < R; ++r) {
      float* cv = c + r * ldc + kLanes * v;
      __m512 out;
      if (beta == 1.0f) {
        out = _mm512_fmadd_ps(scale, acc[r][v], _mm512_maskz_loadu_ps(mask, cv));
      } else if (beta != 0.0f) {
        out = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, cv), _mm512_mul_ps(scale, acc[r][v]));
      } else {
        out = _mm512_mul_ps(scale, acc[r][v]);
      }
      _mm512_mask_storeu_ps(cv, mask, out);
    }
  }
}

// Rows [i0, i1) of c (at most kGroupRows) against every block, kBlockRows at a time.
template <int Pairs>
void group_rows(const std::uint32_t (*a_pairs)[kShortInner / 2], i64 rows, i64 pairs, const std::uint32_t* packed,
                i64 n, float alpha, float beta, float* c, i64 ldc) {
  for (i64 j0 = 0; j0 < n; j0 += kBlock) {
    const std::uint32_t* block_pairs = packed + j0 / kBlock * pairs * kBlock;
    i64 i = 0;
    for (; i + kBlockRows <= rows; i += kBlockRows)
      rows_block<kBlockRows, Pairs>(a_pairs + i, pairs, block_pairs, n - j0, alpha, beta, c + i * ldc + j0, ldc);
    for (; i < rows; ++i) rows_block<1, Pairs>(a_pairs + i, pairs, block_pairs, n - j0, alpha, beta, c + i * ldc + j0, ldc);
  }
}

bool short_product(bool threaded, bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                   const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  if (k <= 0 || k > kShortInner) return false;
  const i64 pairs = (k + 1) / 2, blocks = (n + kBlock - 1) / kBlock;
  // b's columns as pairs of terms: packed[block][p/2][j % kBlock] holds terms p and p + 1 of
  // column j, zero past n.
  std::vector<std::uint32_t> packed(static_cast<std::size_t>(blocks * pairs * kBlock), 0u);
  for (i64 j = 0; j < n; ++j) {
    const auto term = [&](i64 p) -> std::uint32_t { return trans_b ? b[j * ldb + p] : b[p * ldb + j]; };
    std::uint32_t* column = packed.data() + j / kBlock * pairs * kBlock + j % kBlock;
    for (i64 p = 0; p < k; p += 2) column[p / 2 * kBlock] = term(p) | (p + 1 < k ? term(p + 1) << 16 : 0u);
  }
  const i64 groups = (m + kGroupRows - 1) / kGroupRows;
#pragma omp parallel for if (threaded && m * n * k > kThreadedWork)
  for (i64 group = 0; group < groups; ++group) {
    const i64 i0 = group * kGroupRows, i1 = std::min(m, i0 + kGroupRows);
    std::uint32_t a_pairs[kGroupRows][kShortInner / 2];
    for (i64 i = i0; i < i1; ++i) {  // the row's terms as they lie, the last pair's second zero for odd k
      std::uint32_t* row = a_pairs[i - i0];
      row[pairs - 1] = 0;
      std::memcpy(row, a + i * lda, static_cast<std::size_t>(k) * 2);
    }
    float* c_rows = c + i0 * ldc;
    switch (pairs) {
      case 8: group_rows<8>(a_pairs, i1 - i0, pairs, packed.data(), n, alpha, beta, c_rows, ldc); break;
      case 4: group_rows<4>(a_pairs, i1 - i0, pairs, packed.data(), n, alpha, beta, c_rows, ldc); break;
      default: group_rows<0>(a_pairs, i1 - i0, pairs, packed.data(), n, alpha, beta, c_rows, ldc);
    }
  }
  return true;
}

}  // namespace

bool gemm_bf16_short(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                     const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  return short_product(true, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

bool gemm_bf16_short_serial(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                            const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  return short_product(false, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
#else
bool gemm_bf16_short(bool, i64, i64, i64, float, const std::uint16_t*, i64, const std::uint16_t*, i64, float, float*,
                     i64) {
  return false;
}
bool gemm_bf16_short_serial(bool, i64, i64, i64, float, const std::uint16_t*, i64, const std::uint16_t*, i64, float,
                            float*, i64) {
  return false;
}
#endif

}  // namespace loracpp::backend::cpu

#pragma GCC diagnostic pop
