// bf16 products with at most 16 columns: a LoRA branch's rank-r products x Aᵀ and g B. oneDNN runs
// these at a third to nine tenths of its rate on square shapes on two AVX-512 cores (138 GFLOP/s
// with 2048 terms, 250-370 with 768), its kernels blocked for wide products. Here a row of the
// result fits one vector of 16 f32 lanes (8 at rank 8), and AVX512-BF16's dot-product instruction
// (vdpbf16ps: each lane adds two bf16 products into f32) takes terms p and p + 1 of every lane at
// once: the narrow operand is packed once as pairs of terms, and a's pairs, side by side in its
// rows, are broadcast straight from memory. Both operands are fresh in cache where these products
// run (x rounded for the frozen product just before, g for its input gradient). The transposed
// shapes, uᵀ x and tᵀ g with r rows, stay with oneDNN: two kernels of this kind for them ran alone
// on par with it or up to a third faster, and no faster in a step, where x comes back from memory.
#include "backend/cpu/gemm_bf16_narrow.h"

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

constexpr i64 kLanes = 16;  // columns of c at most: one vector of f32

// The 32-bit word of terms (p, p + 1) of a row whose terms lie side by side; term p + 1 is taken
// as 0 past the last term.
inline std::uint32_t pair_at(const std::uint16_t* row, i64 p, i64 k) {
  if (p + 1 < k) {
    std::uint32_t word;
    std::memcpy(&word, row + p, 4);
    return word;
  }
  return row[p];
}

// Multiply-adds below which a product stays on the calling thread.
constexpr i64 kThreadedWork = i64{1} << 18;

// The lanes of c's rows: one vector of 16 f32, or of 8 where c has no more columns (a rank-8
// adapter's), whose dot-product instruction runs twice as often on CPUs that split 512-bit ones.
template <int kWidth>
struct Lanes;
template <>
struct Lanes<16> {
  using Vec = __m512;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec dot(Vec acc, std::uint32_t a_pair, const std::uint32_t* b_pairs) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a_pair))),
                            reinterpret_cast<__m512bh>(_mm512_loadu_si512(b_pairs)));
  }
  // c[0, n) = alpha v + beta c
  static void store(float* c, i64 n, Vec v, float alpha, float beta) {
    const auto mask = static_cast<__mmask16>((1u << n) - 1);
    v = _mm512_mul_ps(_mm512_set1_ps(alpha), v);
    if (beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, c), v);
    _mm512_mask_storeu_ps(c, mask, v);
  }
};
template <>
struct Lanes<8> {
  using Vec = __m256;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec dot(Vec acc, std::uint32_t a_pair, const std::uint32_t* b_pairs) {
    return _mm256_dpbf16_ps(acc, reinterpret_cast<__m256bh>(_mm256_set1_epi32(static_cast<int>(a_pair))),
                            reinterpret_cast<__m256bh>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b_pairs))));
  }
  static void store(float* c, i64 n, Vec v, float alpha, float beta) {
    const auto mask = static_cast<__mmask8>((1u << n) - 1);
    v = _mm256_mul_ps(_mm256_set1_ps(alpha), v);
    if (beta != 0.0f) v = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_maskz_loadu_ps(mask, c), v);
    _mm256_mask_storeu_ps(c, mask, v);
  }
};

// c[i, 0..n) = alpha a[i, :] op(b) + beta c[i, 0..n) for R rows of a from row i0, n <= kWidth: b
// packed as pairs[p/2][lane], kWidth words a pair of terms.
template <int kWidth, int R>
void narrow_columns_rows(i64 i0, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                         const std::uint32_t* pairs, float beta, float* c, i64 ldc) {
  using L = Lanes<kWidth>;
  typename L::Vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = L::zero();
  const std::uint16_t* rows = a + i0 * lda;
  for (i64 p = 0; p < k; p += 2, pairs += kWidth)
    for (int r = 0; r < R; ++r) acc[r] = L::dot(acc[r], pair_at(rows + r * lda, p, k), pairs);
  for (int r = 0; r < R; ++r) L::store(c + (i0 + r) * ldc, n, acc[r], alpha, beta);
}

template <int kWidth>
void narrow_columns(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                    const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  // b's columns as pairs of terms: pairs[p/2][j] holds terms p and p + 1 of column j, zero past n.
  std::vector<std::uint32_t> pairs(static_cast<std::size_t>((k + 1) / 2 * kWidth), 0u);
  for (i64 p = 0; p < k; p += 2)
    for (i64 j = 0; j < n; ++j) {
      const auto term = [&](i64 q) -> std::uint32_t { return trans_b ? b[j * ldb + q] : b[q * ldb + j]; };
      pairs[static_cast<std::size_t>(p / 2 * kWidth + j)] = term(p) | (p + 1 < k ? term(p + 1) << 16 : 0u);
    }
  // Rows per block: enough independent sums to cover the instruction's latency at its rate.
  constexpr int kBlockRows = kWidth == 16 ? 8 : 12;
  const i64 blocks = m / kBlockRows;
#pragma omp parallel for if (m * n * k > kThreadedWork)
  for (i64 block = 0; block < blocks; ++block)
    narrow_columns_rows<kWidth, kBlockRows>(block * kBlockRows, n, k, alpha, a, lda, pairs.data(), beta, c, ldc);
  for (i64 i = blocks * kBlockRows; i < m; ++i)
    narrow_columns_rows<kWidth, 1>(i, n, k, alpha, a, lda, pairs.data(), beta, c, ldc);
}

}  // namespace

bool gemm_bf16_narrow(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                      const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  if (k <= 0 || n > kLanes) return false;
  if (n <= 8) {
    narrow_columns<8>(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    narrow_columns<16>(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  return true;
}
#else
bool gemm_bf16_narrow(bool, i64, i64, i64, float, const std::uint16_t*, i64, const std::uint16_t*, i64, float, float*,
                      i64) {
  return false;
}
#endif

}  // namespace loracpp::backend::cpu

#pragma GCC diagnostic pop
