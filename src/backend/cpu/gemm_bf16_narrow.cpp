// bf16 products with at most 16 columns or rows: a LoRA branch's rank-r products, x Aᵀ and g B (r
// columns) and uᵀ x and tᵀ g (r rows). oneDNN runs these at a third to nine tenths of its rate on
// square shapes on two AVX-512 cores (138 GFLOP/s with 2048 terms, 180-370 with 768 or 1024), its
// kernels blocked for wide products. Here the narrow side fits one vector of 16 f32 lanes, and
// AVX512-BF16's dot-product instruction (vdpbf16ps: each lane adds two bf16 products into f32)
// takes terms p and p + 1 of every lane at once. Both kernels need each operand's pairs of terms
// as 32-bit words: a's, side by side in its rows, are broadcast straight from memory (or packed
// once, for few rows); the narrow b is packed once; a wide b, whose pairs lie a row apart, is
// interleaved two rows at a time as it is read. Measured alone against oneDNN, alternately: few
// columns 1.5-2.5x its rate at rank 8 or with 2048 terms, on par at rank 16 with 768; few rows on
// par at rank 16 (246-293 GFLOP/s both), 6-11% ahead at rank 8.
#include "backend/cpu/gemm_bf16_narrow.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
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
  static void store(float* c, i64 n, Vec v) { _mm512_mask_storeu_ps(c, static_cast<__mmask16>((1u << n) - 1), v); }
};
template <>
struct Lanes<8> {
  using Vec = __m256;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec dot(Vec acc, std::uint32_t a_pair, const std::uint32_t* b_pairs) {
    return _mm256_dpbf16_ps(acc, reinterpret_cast<__m256bh>(_mm256_set1_epi32(static_cast<int>(a_pair))),
                            reinterpret_cast<__m256bh>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b_pairs))));
  }
  static void store(float* c, i64 n, Vec v) { _mm256_mask_storeu_ps(c, static_cast<__mmask8>((1u << n) - 1), v); }
};

// c[i, 0..n) = a[i, :] op(b) for R rows of a from row i0, n <= kWidth: b packed as
// pairs[p/2][lane], kWidth words a pair of terms.
template <int kWidth, int R>
void narrow_columns_rows(i64 i0, i64 n, i64 k, const std::uint16_t* a, i64 lda, const std::uint32_t* pairs,
                         float* c, i64 ldc) {
  using L = Lanes<kWidth>;
  typename L::Vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = L::zero();
  const std::uint16_t* rows = a + i0 * lda;
  for (i64 p = 0; p < k; p += 2, pairs += kWidth)
    for (int r = 0; r < R; ++r) acc[r] = L::dot(acc[r], pair_at(rows + r * lda, p, k), pairs);
  for (int r = 0; r < R; ++r) L::store(c + (i0 + r) * ldc, n, acc[r]);
}

template <int kWidth>
void narrow_columns(bool trans_b, i64 m, i64 n, i64 k, const std::uint16_t* a, i64 lda, const std::uint16_t* b,
                    i64 ldb, float* c, i64 ldc) {
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
    narrow_columns_rows<kWidth, kBlockRows>(block * kBlockRows, n, k, a, lda, pairs.data(), c, ldc);
  for (i64 i = blocks * kBlockRows; i < m; ++i) narrow_columns_rows<kWidth, 1>(i, n, k, a, lda, pairs.data(), c, ldc);
}

// c[0..M, j0..j0+16) = a b for column block j0 of c (n - j0 columns of it when fewer), M <= 16
// rows: a packed as a_pairs[p/2][i], b read as it lies. Rows p and p + 1 of b are interleaved
// within each 128-bit half, which leaves the lanes in the column order of kInterleaved; each row
// of the result is put back in order as it is stored. (Widening each row to 32 bits and merging
// the two ran at 70% of this rate, and masked loads with the odd last term tested in the loop at
// 30%.)
// acc[i] += the pair of terms of row i of a (pair[i]) times rows low and high of b.
template <int M>
[[gnu::always_inline]] inline void add_pair(__m512 (&acc)[M], __m256i low, __m256i high, const std::uint32_t* pair) {
  const __m512i words = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_unpacklo_epi16(low, high)),
                                           _mm256_unpackhi_epi16(low, high), 1);
  for (int i = 0; i < M; ++i)
    acc[i] = _mm512_dpbf16_ps(acc[i], reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair[i]))),
                              reinterpret_cast<__m512bh>(words));
}

template <int M>
void narrow_rows_block(i64 j0, i64 n, i64 k, const std::uint32_t* a_pairs, const std::uint16_t* b, i64 ldb, float* c,
                       i64 ldc) {
  const i64 width = std::min(kLanes, n - j0);
  __m512 acc[M];
  for (int i = 0; i < M; ++i) acc[i] = _mm512_setzero_ps();
  const std::uint16_t* col = b + j0;
  const i64 pairs = k / 2;
  if (width == kLanes) {
    for (i64 q = 0; q < pairs; ++q, col += 2 * ldb, a_pairs += M)
      add_pair(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)),
               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + ldb)), a_pairs);
    if (k % 2) add_pair(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col)), _mm256_setzero_si256(), a_pairs);
  } else {
    const auto mask = static_cast<__mmask16>((1u << width) - 1);
    for (i64 q = 0; q < pairs; ++q, col += 2 * ldb, a_pairs += M)
      add_pair(acc, _mm256_maskz_loadu_epi16(mask, col), _mm256_maskz_loadu_epi16(mask, col + ldb), a_pairs);
    if (k % 2) add_pair(acc, _mm256_maskz_loadu_epi16(mask, col), _mm256_setzero_si256(), a_pairs);
  }
  // Lane l holds column kInterleaved[l]: put each column back at its place.
  const __m512i order = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
  const auto mask = static_cast<__mmask16>((1u << width) - 1);
  for (int i = 0; i < M; ++i) _mm512_mask_storeu_ps(c + i * ldc + j0, mask, _mm512_permutexvar_ps(order, acc[i]));
}

using RowsBlock = void (*)(i64, i64, i64, const std::uint32_t*, const std::uint16_t*, i64, float*, i64);
template <std::size_t... M>
constexpr std::array<RowsBlock, sizeof...(M)> rows_blocks(std::index_sequence<M...>) {
  return {&narrow_rows_block<static_cast<int>(M) + 1>...};
}
constexpr auto kRowsBlocks = rows_blocks(std::make_index_sequence<kLanes>{});

void narrow_rows(i64 m, i64 n, i64 k, const std::uint16_t* a, i64 lda, const std::uint16_t* b, i64 ldb, float* c,
                 i64 ldc) {
  std::vector<std::uint32_t> a_pairs(static_cast<std::size_t>((k + 1) / 2 * m));
  for (i64 p = 0; p < k; p += 2)
    for (i64 i = 0; i < m; ++i) a_pairs[static_cast<std::size_t>(p / 2 * m + i)] = pair_at(a + i * lda, p, k);
  const RowsBlock block = kRowsBlocks[static_cast<std::size_t>(m - 1)];
#pragma omp parallel for if (m * n * k > kThreadedWork)
  for (i64 j0 = 0; j0 < n; j0 += kLanes) block(j0, n, k, a_pairs.data(), b, ldb, c, ldc);
}

}  // namespace

bool gemm_bf16_narrow(bool trans_b, i64 m, i64 n, i64 k, const std::uint16_t* a, i64 lda, const std::uint16_t* b,
                      i64 ldb, float* c, i64 ldc) {
  if (k <= 0) return false;
  if (n > kLanes) {
    if (m > kLanes || trans_b) return false;
    narrow_rows(m, n, k, a, lda, b, ldb, c, ldc);
  } else if (n <= 8) {
    narrow_columns<8>(trans_b, m, n, k, a, lda, b, ldb, c, ldc);
  } else {
    narrow_columns<16>(trans_b, m, n, k, a, lda, b, ldb, c, ldc);
  }
  return true;
}
#else
bool gemm_bf16_narrow(bool, i64, i64, i64, const std::uint16_t*, i64, const std::uint16_t*, i64, float*, i64) {
  return false;
}
#endif

}  // namespace loracpp::backend::cpu

#pragma GCC diagnostic pop
