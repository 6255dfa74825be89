// The blocked product of gemm_packed.h, laid out as the usual high-performance GEMMs are: op(b) is
// packed a block of kDepth terms by kBlockColumns columns at a time, into panels of kTileColumns
// columns that stay in L1; op(a) a block of up to kBlockRows rows at a time, into panels of
// kTileRows rows that stay in L2; and a register tile of kTileRows x kTileColumns sums every term
// of a pair of panels. Threads share out c by rows or by columns.
#include "backend/cpu/gemm_packed.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/vec_math.h"

namespace loracpp::backend::cpu {

namespace {

#if defined(LORACPP_VECTOR_FLOATS)
using Vec = Floats;
#else
struct Vec {  // one float at a time where the build targets no vector unit we use
  float v;
  static constexpr int kLanes = 1;
  static Vec all(float x) { return {x}; }
  static Vec load(const float* p) { return {*p}; }
  void store(float* p) const { *p = v; }
  friend Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
  static Vec fma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
};
#endif

constexpr i64 kTileRows = 6;                   // rows of c in registers: 12 accumulators of 2 vectors
constexpr i64 kTileColumns = 2 * Vec::kLanes;  // columns of c in registers
constexpr i64 kDepth = 256;                    // terms per packed block: a panel of b is 16 KB on AVX2
constexpr i64 kBlockRows = 144;                // most rows of a packed at once (144 KB), a multiple of kTileRows
constexpr i64 kBlockColumns = 4096;            // most columns of b packed at once (4 MB), a multiple of kTileColumns

i64 round_up(i64 x, i64 to) { return (x + to - 1) / to * to; }

inline float value_at(const float* p, i64 i) { return p[i]; }
inline float value_at(const std::uint16_t* p, i64 i) { return bf16_to_float(p[i]); }

#if defined(LORACPP_VECTOR_FLOATS)
// Eight values from p as floats.
inline __m256 eight(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 eight(const std::uint16_t* p) { return widen_bf16_eight(p); }

// Eight rows of eight floats transposed in place.
inline void transpose8(__m256 (&v)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Padding a packed block of a needs past its end: a panel's last transposed store writes 8 floats
// where a term has kTileRows.
constexpr i64 kPackSpill = 8 - kTileRows;
#else
constexpr i64 kPackSpill = 0;
#endif

// Rows [i0, i0 + rows) and terms [p0, p0 + depth) of op(a) into panels of kTileRows rows, term by
// term; rows past the end are zero. Writes kPackSpill floats past the last panel.
template <typename T>
void pack_rows(const T* a, i64 lda, bool trans, i64 i0, i64 rows, i64 p0, i64 depth, float* out) {
  for (i64 q = 0; q < rows; q += kTileRows) {
    const i64 height = std::min(kTileRows, rows - q);
    float* panel = out + q * depth;
    if (trans) {  // a term's rows lie side by side
      for (i64 p = 0; p < depth; ++p) {
        const T* src = a + (p0 + p) * lda + i0 + q;
        float* dst = panel + p * kTileRows;
        for (i64 r = 0; r < height; ++r) dst[r] = value_at(src, r);
        for (i64 r = height; r < kTileRows; ++r) dst[r] = 0.0f;
      }
      continue;
    }
    // A row's terms lie side by side: eight terms of each row at a time, transposed, each term's
    // store running 8 - kTileRows floats into the next term's, which overwrites them.
    const T* src = a + (i0 + q) * lda + p0;
    i64 p = 0;
#if defined(LORACPP_VECTOR_FLOATS)
    for (; p + 8 <= depth; p += 8) {
      __m256 v[8];
      for (i64 r = 0; r < 8; ++r) v[r] = r < height ? eight(src + r * lda + p) : _mm256_setzero_ps();
      transpose8(v);
      for (i64 t = 0; t < 8; ++t) _mm256_storeu_ps(panel + (p + t) * kTileRows, v[t]);
    }
#endif
    for (; p < depth; ++p) {
      for (i64 r = 0; r < kTileRows; ++r) panel[p * kTileRows + r] = r < height ? value_at(src + r * lda, p) : 0.0f;
    }
  }
}

// Columns [j0, j0 + width) (at most kTileColumns) and terms [p0, p0 + depth) of op(b) into one
// panel, term by term; columns past the end are zero.
template <typename T>
void pack_panel(const T* b, i64 ldb, bool trans, i64 j0, i64 width, i64 p0, i64 depth, float* panel) {
  if (!trans) {  // a term's columns lie side by side
    for (i64 p = 0; p < depth; ++p) {
      const T* src = b + (p0 + p) * ldb + j0;
      float* dst = panel + p * kTileColumns;
      for (i64 j = 0; j < width; ++j) dst[j] = value_at(src, j);
      for (i64 j = width; j < kTileColumns; ++j) dst[j] = 0.0f;
    }
    return;
  }
  // A column's terms lie side by side (b is [n, k]: a weight in x Wᵀ): blocks of eight columns by
  // eight terms, transposed.
  const T* src = b + j0 * ldb + p0;
  i64 p = 0;
#if defined(LORACPP_VECTOR_FLOATS)
  for (; p + 8 <= depth; p += 8) {
    for (i64 j = 0; j < kTileColumns; j += 8) {
      __m256 v[8];
      for (i64 r = 0; r < 8; ++r) v[r] = j + r < width ? eight(src + (j + r) * ldb + p) : _mm256_setzero_ps();
      transpose8(v);
      for (i64 t = 0; t < 8; ++t) _mm256_storeu_ps(panel + (p + t) * kTileColumns + j, v[t]);
    }
  }
#endif
  for (; p < depth; ++p) {
    for (i64 j = 0; j < kTileColumns; ++j) panel[p * kTileColumns + j] = j < width ? value_at(src + j * ldb, p) : 0.0f;
  }
}

// c[kTileRows, kTileColumns] = alpha (a panel)(b panel) + beta c over `depth` terms; c is not read
// where beta is 0.
void tile(i64 depth, const float* a, const float* b, float alpha, float beta, float* c, i64 ldc) {
  Vec acc[kTileRows][2];
  for (auto& row : acc) row[0] = row[1] = Vec::all(0.0f);
  // c's rows are on their way while the terms are summed (without this, 10-30% slower alone).
  for (i64 r = 0; r < kTileRows; ++r) {
    __builtin_prefetch(c + r * ldc, 1);
    __builtin_prefetch(c + r * ldc + kTileColumns - 1, 1);
  }
#pragma GCC unroll 4
  for (i64 p = 0; p < depth; ++p) {
    const Vec b0 = Vec::load(b), b1 = Vec::load(b + Vec::kLanes);
#pragma GCC unroll 6
    for (i64 r = 0; r < kTileRows; ++r) {
      const Vec x = Vec::all(a[r]);
      acc[r][0] = Vec::fma(x, b0, acc[r][0]);
      acc[r][1] = Vec::fma(x, b1, acc[r][1]);
    }
    a += kTileRows;
    b += kTileColumns;
  }
  const Vec scale = Vec::all(alpha);
  for (i64 r = 0; r < kTileRows; ++r) {
    for (i64 h = 0; h < 2; ++h) {
      float* out = c + r * ldc + h * Vec::kLanes;
      Vec v = acc[r][h] * scale;
      if (beta != 0.0f) v = Vec::fma(Vec::all(beta), Vec::load(out), v);
      v.store(out);
    }
  }
}

// The same for a tile cut short by c's edge (height rows, width columns), through a local copy.
void edge_tile(i64 depth, const float* a, const float* b, float alpha, float beta, float* c, i64 ldc, i64 height,
               i64 width) {
  alignas(64) float sums[kTileRows * kTileColumns];
  tile(depth, a, b, 1.0f, 0.0f, sums, kTileColumns);
  for (i64 r = 0; r < height; ++r) {
    float* out = c + r * ldc;
    for (i64 j = 0; j < width; ++j) out[j] = alpha * sums[r * kTileColumns + j] + (beta == 0.0f ? 0.0f : beta * out[j]);
  }
}

// A thread's packed blocks of a and b, kept from one product to the next (whatever the operands'
// types) so that a product allocates nothing once the largest blocks have been seen.
struct PackBuffers {
  std::vector<float> a, b;
};

PackBuffers& pack_buffers() {
  thread_local PackBuffers buffers;
  return buffers;
}

// c = alpha op(a) op(b) + beta c on the calling thread: b a block at a time, a a block of rows at a
// time, each packed into this thread's buffers.
template <typename TA, typename TB>
void blocked_product(i64 m, i64 n, i64 k, float alpha, const TA* a, i64 lda, bool trans_a, const TB* b, i64 ldb,
                     bool trans_b, float beta, float* c, i64 ldc) {
  // Rows per block: at most kBlockRows, the blocks as even as whole tiles allow.
  const i64 wanted_blocks = (m + kBlockRows - 1) / kBlockRows;
  const i64 block_rows = round_up((m + wanted_blocks - 1) / wanted_blocks, kTileRows);
  const i64 depth_max = std::min(k, kDepth);
  PackBuffers& buffers = pack_buffers();
  buffers.a.resize(static_cast<std::size_t>(block_rows * depth_max + kPackSpill));
  buffers.b.resize(static_cast<std::size_t>(depth_max * round_up(std::min(n, kBlockColumns), kTileColumns)));
  float* const a_block = buffers.a.data();
  float* const b_block = buffers.b.data();
  for (i64 j0 = 0; j0 < n; j0 += kBlockColumns) {
    const i64 columns = std::min(kBlockColumns, n - j0);
    for (i64 p0 = 0; p0 < k; p0 += kDepth) {
      const i64 depth = std::min(kDepth, k - p0);
      const float beta_here = p0 == 0 ? beta : 1.0f;
      for (i64 j = 0; j < columns; j += kTileColumns)
        pack_panel(b, ldb, trans_b, j0 + j, std::min(kTileColumns, columns - j), p0, depth, b_block + j * depth);
      for (i64 i0 = 0; i0 < m; i0 += block_rows) {
        const i64 rows = std::min(block_rows, m - i0);
        pack_rows(a, lda, trans_a, i0, rows, p0, depth, a_block);
        for (i64 j = 0; j < columns; j += kTileColumns) {
          const i64 width = std::min(kTileColumns, columns - j);
          const float* b_panel = b_block + j * depth;
          for (i64 r = 0; r < rows; r += kTileRows) {
            const i64 height = std::min(kTileRows, rows - r);
            float* c_tile = c + (i0 + r) * ldc + j0 + j;
            if (height == kTileRows && width == kTileColumns) {
              tile(depth, a_block + r * depth, b_panel, alpha, beta_here, c_tile, ldc);
            } else {
              edge_tile(depth, a_block + r * depth, b_panel, alpha, beta_here, c_tile, ldc, height, width);
            }
          }
        }
      }
    }
  }
}

// The same with OpenMP's threads when `parallel` (else on the calling thread), each on its own
// share of c: a range of rows, or of columns where c is wider than tall. Each packs what its share
// reads, so the threads never wait for each other until the end (a team's barrier costs a sleep and a wake-up under
// OMP_WAIT_POLICY=PASSIVE, and a long product would need two per block of terms).
template <typename TA, typename TB>
void shared_product(i64 m, i64 n, i64 k, float alpha, const TA* a, i64 lda, bool trans_a, const TB* b, i64 ldb,
                    bool trans_b, float beta, float* c, i64 ldc, bool parallel) {
  if (!parallel) return blocked_product(m, n, k, alpha, a, lda, trans_a, b, ldb, trans_b, beta, c, ldc);
#pragma omp parallel
  {
    const i64 team = omp_get_num_threads(), me = omp_get_thread_num();
    const bool by_rows = m >= n;
    const i64 extent = by_rows ? m : n, unit = by_rows ? kTileRows : kTileColumns;
    const i64 begin = std::min(extent, round_up(me * extent / team, unit));
    const i64 end = std::min(extent, round_up((me + 1) * extent / team, unit));
    if (begin < end) {
      if (by_rows) {
        blocked_product(end - begin, n, k, alpha, trans_a ? a + begin : a + begin * lda, lda, trans_a, b, ldb, trans_b,
                        beta, c + begin * ldc, ldc);
      } else {
        blocked_product(m, end - begin, k, alpha, a, lda, trans_a, trans_b ? b + begin * ldb : b + begin, ldb, trans_b,
                        beta, c + begin, ldc);
      }
    }
  }
}

template <typename TA>
void with_b(i64 m, i64 n, i64 k, float alpha, const TA* a, i64 lda, bool trans_a, const PackedOperand& b, float beta,
            float* c, i64 ldc, bool parallel) {
  if (b.dtype == DType::bf16) {
    shared_product(m, n, k, alpha, a, lda, trans_a, static_cast<const std::uint16_t*>(b.data), b.ld, b.trans, beta, c,
                   ldc, parallel);
  } else {
    shared_product(m, n, k, alpha, a, lda, trans_a, static_cast<const float*>(b.data), b.ld, b.trans, beta, c, ldc,
                   parallel);
  }
}

}  // namespace

void packed_gemm(i64 m, i64 n, i64 k, float alpha, const PackedOperand& a, const PackedOperand& b, float beta,
                 float* c, i64 ldc, bool parallel) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // no terms: c = beta c
    for (i64 i = 0; i < m; ++i) {
      float* ci = c + i * ldc;
      for (i64 j = 0; j < n; ++j) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
    }
    return;
  }
  if (a.dtype == DType::bf16) {
    with_b(m, n, k, alpha, static_cast<const std::uint16_t*>(a.data), a.ld, a.trans, b, beta, c, ldc, parallel);
  } else {
    with_b(m, n, k, alpha, static_cast<const float*>(a.data), a.ld, a.trans, b, beta, c, ldc, parallel);
  }
}

}  // namespace loracpp::backend::cpu
