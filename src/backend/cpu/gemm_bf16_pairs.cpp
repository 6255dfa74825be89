// bf16 products over packed pairs of terms (gemm_bf16_pairs.h). Blocks of c of 6 rows by up to 64
// columns (24 accumulators, four vectors of b and a broadcast: 29 of the 32 registers) run down
// the pairs: each pair loads the block's four vectors of b once for all six rows, and each row's
// pair is broadcast into the instruction. Columns run outermost, so a block of b's columns (its
// pairs by 64 columns: 8 KB for a 64-value head's keys) is read from the L1 or L2 cache by every
// block of rows. On a Zen 5, one thread, [128, 512] by 32 pairs (a tile's scores) and [128, 64] by
// 256 pairs (probabilities times values) ran at 330-400 GFLOP/s, where oneDNN's products of the
// same operands unpacked ran at 320-365.
#include "backend/cpu/gemm_bf16_pairs.h"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

// GCC 12 reports its own AVX-512 headers' undefined-vector idiom as (maybe) uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace loracpp::backend::cpu {

namespace {

// Word of terms x[0] and x[step]: the low half the first.
inline std::uint32_t pair_of(const std::uint16_t* x, i64 step) {
  return std::uint32_t{x[0]} | std::uint32_t{x[step]} << 16;
}

// o[c] = low[c] | low[ldx + c] << 16 for c < width, the second term zero when `low` is the last row.
inline void pair_rows(const std::uint16_t* low, i64 ldx, bool last, i64 width, std::uint32_t* o) {
  if (last) {
#pragma omp simd
    for (i64 c = 0; c < width; ++c) o[c] = low[c];
  } else {
#pragma omp simd
    for (i64 c = 0; c < width; ++c) o[c] = pair_of(low + c, ldx);
  }
}

}  // namespace

void pack_row_pairs(const std::uint16_t* x, i64 ldx, i64 rows, i64 cols, std::uint32_t* out) {
  const i64 height = (rows + 1) / 2;
  for (i64 j0 = 0; j0 < cols; j0 += kPanel) {
    const i64 width = std::min(kPanel, cols - j0);
    std::uint32_t* panel = out + j0 / kPanel * height * kPanel;
    for (i64 q = 0; q < height; ++q) {
      std::uint32_t* o = panel + q * kPanel;
      pair_rows(x + 2 * q * ldx + j0, ldx, 2 * q + 1 >= rows, width, o);
      std::fill(o + width, o + kPanel, 0u);
    }
  }
}

void pack_column_pairs(const std::uint16_t* x, i64 ldx, i64 rows, i64 cols, std::uint32_t* out) {
  const i64 height = (cols + 1) / 2, whole = cols / 2;  // pairs, and those with both terms
  for (i64 r0 = 0; r0 < rows; r0 += kPanel) {
    const i64 width = std::min(kPanel, rows - r0);
    std::uint32_t* panel = out + r0 / kPanel * height * kPanel;
    for (i64 p = 0; p < height; ++p) {
      std::uint32_t* o = panel + p * kPanel;
      const std::uint16_t* column = x + r0 * ldx + 2 * p;
      if (p < whole) {
        for (i64 r = 0; r < width; ++r) o[r] = pair_of(column + r * ldx, 1);
      } else {
        for (i64 r = 0; r < width; ++r) o[r] = column[r * ldx];
      }
      std::fill(o + width, o + kPanel, 0u);
    }
  }
}

void pack_rows_down(const std::uint16_t* x, i64 ldx, i64 rows, i64 cols, std::uint32_t* out) {
  for (i64 q = 0; q < (rows + 1) / 2; ++q) pair_rows(x + 2 * q * ldx, ldx, 2 * q + 1 >= rows, cols, out + q * cols);
}

#if defined(__AVX512BF16__)
bool bf16_pairs_built() { return true; }

namespace {

constexpr i64 kLanes = 16;
constexpr int kRows = 6;                   // rows of c a block
constexpr int kVectors = kPanel / kLanes;  // vectors of columns a block: a panel's

// c's block of R rows by V vectors (`cols` of its columns kept, the rest neither read nor
// written) = alpha * the sum over pairs [p0, p1) + beta * c. a: the block's first row; b: its first
// column.
template <int R, int V>
void block(const std::uint32_t* a, i64 row_stride, i64 pair_stride, i64 p0, i64 p1, const std::uint32_t* b, i64 cols,
           float alpha, float beta, float* c, i64 ldc) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (i64 p = p0; p < p1; ++p) {
    const std::uint32_t* bp = b + p * kPanel;
    __m512bh bv[V];
    for (int v = 0; v < V; ++v) bv[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(bp + kLanes * v));
    const std::uint32_t* ap = a + p * pair_stride;
    for (int r = 0; r < R; ++r) {
      int pair;
      std::memcpy(&pair, ap + r * row_stride, sizeof pair);
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha), keep = _mm512_set1_ps(beta);
  for (int v = 0; v < V; ++v) {
    const i64 lanes = std::min(kLanes, cols - kLanes * v);
    const __mmask16 mask = lanes >= kLanes ? __mmask16(0xffff) : static_cast<__mmask16>((1u << lanes) - 1);
    for (int r = 0; r < R; ++r) {
      float* cv = c + r * ldc + kLanes * v;
      __m512 out = _mm512_mul_ps(scale, acc[r][v]);
      if (beta != 0.0f) out = _mm512_fmadd_ps(keep, _mm512_maskz_loadu_ps(mask, cv), out);
      _mm512_mask_storeu_ps(cv, mask, out);
    }
  }
}

using BlockFn = void (*)(const std::uint32_t*, i64, i64, i64, i64, const std::uint32_t*, i64, float, float, float*,
                         i64);

template <int R>
BlockFn block_of_vectors(i64 vectors) {
  switch (vectors) {
    case 1: return block<R, 1>;
    case 2: return block<R, 2>;
    case 3: return block<R, 3>;
    default: return block<R, 4>;
  }
}

BlockFn block_fn(i64 rows, i64 vectors) {
  switch (rows) {
    case 1: return block_of_vectors<1>(vectors);
    case 2: return block_of_vectors<2>(vectors);
    case 3: return block_of_vectors<3>(vectors);
    case 4: return block_of_vectors<4>(vectors);
    case 5: return block_of_vectors<5>(vectors);
    default: return block_of_vectors<kRows>(vectors);
  }
}

}  // namespace

void gemm_bf16_pairs(i64 m, i64 n, i64 pairs, float alpha, PairsOperand a, const std::uint32_t* b, i64 height,
                     float beta, float* c, i64 ldc, Triangle triangle) {
  const i64 d = triangle.diagonal;
  for (i64 j0 = 0; j0 < n; j0 += kPanel) {
    const i64 panel_cols = std::min(kPanel, n - j0);
    for (i64 i0 = 0; i0 < m; i0 += kRows) {
      const i64 rows = std::min<i64>(kRows, m - i0), last = i0 + rows - 1;
      i64 p0 = 0, p1 = pairs, cols = panel_cols;
      switch (triangle.kind) {
        case Triangle::none: break;
        case Triangle::columns_to_diagonal:  // up to the vector that holds the block's last row's diagonal
          if (j0 > last + d) continue;
          cols = std::min(cols, last + d + 1 - j0);
          break;
        case Triangle::terms_to_diagonal: p1 = std::clamp<i64>((last + d + 2) / 2, 0, pairs); break;
        case Triangle::terms_from_diagonal: p0 = std::clamp<i64>((i0 - d) / 2, 0, pairs); break;
      }
      block_fn(rows, (cols + kLanes - 1) / kLanes)(a.data + i0 * a.row_stride, a.row_stride, a.pair_stride, p0, p1,
                                                   b + j0 * height, cols, alpha, beta, c + i0 * ldc + j0, ldc);
    }
  }
}
#else
bool bf16_pairs_built() { return false; }

// Without the instruction: the same sums widened to f32 one term at a time (for tests; the
// attention takes its library path on such builds).
void gemm_bf16_pairs(i64 m, i64 n, i64 pairs, float alpha, PairsOperand a, const std::uint32_t* b, i64 height,
                     float beta, float* c, i64 ldc, Triangle triangle) {
  const i64 d = triangle.diagonal;
  const auto low = [](std::uint32_t w) { return bf16_to_float(static_cast<std::uint16_t>(w)); };
  const auto high = [](std::uint32_t w) { return bf16_to_float(static_cast<std::uint16_t>(w >> 16)); };
  for (i64 i = 0; i < m; ++i) {
    i64 n_end = n, p0 = 0, p1 = pairs;
    if (triangle.kind == Triangle::columns_to_diagonal) n_end = std::clamp<i64>(i + d + 1, 0, n);
    if (triangle.kind == Triangle::terms_to_diagonal) p1 = std::clamp<i64>((i + d + 2) / 2, 0, pairs);
    if (triangle.kind == Triangle::terms_from_diagonal) p0 = std::clamp<i64>((i - d) / 2, 0, pairs);
    for (i64 j = 0; j < n_end; ++j) {
      float sum = 0;
      for (i64 p = p0; p < p1; ++p) {
        std::uint32_t x;
        std::memcpy(&x, a.data + i * a.row_stride + p * a.pair_stride, sizeof x);
        const std::uint32_t y = b[(j / kPanel * height + p) * kPanel + j % kPanel];
        sum += low(x) * low(y) + high(x) * high(y);
      }
      float& out = c[i * ldc + j];
      out = alpha * sum + (beta == 0.0f ? 0.0f : beta * out);
    }
  }
}
#endif

}  // namespace loracpp::backend::cpu

#pragma GCC diagnostic pop
