#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <vector>

#if defined(LORACPP_HAVE_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#endif

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"
#include "core/error.h"

namespace loracpp::backend::cpu {

namespace {
constexpr i64 kSmallProduct = i64{1} << 16;  // multiply-adds below which a plain loop beats BLAS's setup
// Inner dimensions up to this make a rank-k update (a LoRA branch's t Bᵀ or u A). Threaded BLAS
// splits those poorly: its threads spent more time yielding to each other than multiplying.
constexpr i64 kRankUpdate = 32;

// c = alpha op(a) op(b) + beta c for products too small to repay a library call (a LoRA branch on
// one generated token), vectorised along a contiguous run: the shared dimension when b is
// transposed (dot products), else the columns of c (a scaled row of b added per term).
void small_product(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                   const float* b, i64 ldb, float beta, float* c, i64 ldc) {
  for (i64 i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    auto a_at = [&](i64 p) { return trans_a ? a[p * lda + i] : a[i * lda + p]; };
    if (trans_b) {
      for (i64 j = 0; j < n; ++j) {
        const float* bj = b + j * ldb;
        float sum = 0;
        if (trans_a) {
          for (i64 p = 0; p < k; ++p) sum += a_at(p) * bj[p];
        } else {
          const float* ai = a + i * lda;
#pragma omp simd reduction(+ : sum)
          for (i64 p = 0; p < k; ++p) sum += ai[p] * bj[p];
        }
        ci[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * ci[j]);
      }
    } else {
      if (beta == 0.0f) {
        std::fill(ci, ci + n, 0.0f);
      } else if (beta != 1.0f) {
        for (i64 j = 0; j < n; ++j) ci[j] *= beta;
      }
      for (i64 p = 0; p < k; ++p) {
        const float s = alpha * a_at(p);
        const float* bp = b + p * ldb;
#pragma omp simd
        for (i64 j = 0; j < n; ++j) ci[j] += s * bp[j];
      }
    }
  }
}

#if defined(__AVX2__) && defined(__FMA__)
// c = alpha a bᵀ + beta c for a few rows of a and k = 8, 16, 24 or 32: a LoRA branch's t Bᵀ on a
// generated token, n dot products of r terms. One at a time, each ends in a horizontal sum that
// costs more than its multiplications (25 cycles per element of c); here eight rows of b are
// multiplied at once and their eight vectors summed across together, by pairwise adds, into one
// vector of eight elements of c.
void short_dot_products(i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b, i64 ldb, float beta,
                        float* c, i64 ldc) {
  const i64 vectors = k / 8;
  for (i64 i = 0; i < m; ++i) {
    __m256 ai[4];
    for (i64 v = 0; v < vectors; ++v) ai[v] = _mm256_loadu_ps(a + i * lda + 8 * v);
    float* ci = c + i * ldc;
    i64 j = 0;
    for (; j + 8 <= n; j += 8) {
      __m256 rows[8];
      for (int q = 0; q < 8; ++q) {
        const float* bq = b + (j + q) * ldb;
        rows[q] = _mm256_mul_ps(_mm256_loadu_ps(bq), ai[0]);
        for (i64 v = 1; v < vectors; ++v) rows[q] = _mm256_fmadd_ps(_mm256_loadu_ps(bq + 8 * v), ai[v], rows[q]);
      }
      __m256 sums = _mm256_mul_ps(sums_of_eight(rows), _mm256_set1_ps(alpha));
      if (beta != 0.0f) sums = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(ci + j), sums);
      _mm256_storeu_ps(ci + j, sums);
    }
    for (; j < n; ++j) {
      float sum = 0;
      for (i64 p = 0; p < k; ++p) sum += a[i * lda + p] * b[j * ldb + p];
      ci[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * ci[j]);
    }
  }
}
#endif

// One row of a against b's rows (a generated token's layers): each thread takes one contiguous
// share of b's rows and streams it once, at the memory's rate; f32 generation ran 30-50% faster
// than through BLAS's matrix-vector product, and rows dealt out in blocks of 16 gained only 2-8%.
void one_row_dot_products(i64 n, i64 k, float alpha, const float* a, const float* b, i64 ldb, float beta, float* c) {
#pragma omp parallel for schedule(static)
  for (i64 j = 0; j < n; ++j) {
    const float* bj = b + j * ldb;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (i64 p = 0; p < k; ++p) sum += a[p] * bj[p];
    c[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * c[j]);
  }
}

// c = alpha a op(b) + beta c for small k. b is packed once in blocks of kRankBlock columns, each
// block's k rows contiguous (4 KiB at k = 16, where rows n apart would share L1 sets) and the last
// block padded with zeros. Each thread takes groups of kRankRows rows of c and walks them one
// column block at a time: the block of b stays in L1 for the whole group, and each row's block of
// c is held in registers while its k scaled rows of b are added, so c is loaded and stored once.
constexpr i64 kRankBlock = 64;
constexpr i64 kRankRows = 16;

void rank_update(bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b, i64 ldb,
                 float beta, float* c, i64 ldc) {
  const i64 blocks = (n + kRankBlock - 1) / kRankBlock;
  std::vector<float> packed(static_cast<std::size_t>(blocks * k * kRankBlock), 0.0f);
  for (i64 block = 0; block < blocks; ++block)
    for (i64 p = 0; p < k; ++p)
      for (i64 j = block * kRankBlock; j < std::min(n, (block + 1) * kRankBlock); ++j)
        packed[static_cast<std::size_t>((block * k + p) * kRankBlock + j % kRankBlock)] =
            trans_b ? b[j * ldb + p] : b[p * ldb + j];
  // The `cols` (at most kRankBlock) columns of one row's block: beta c + sum over p of scale[p] b[p].
  // A partial block goes through a local copy, so every load and store is a whole vector: masked
  // ones cost ten times as much on some CPUs (AMD's, for AVX2), which made this kernel run at a
  // seventh of its speed.
  auto row_block = [&](const float* scale, float* cb, const float* bp, i64 cols) {
#if defined(LORACPP_VECTOR_FLOATS)
    constexpr int kVectors = kRankBlock / Floats::kLanes;
    static_assert(kRankBlock % Floats::kLanes == 0);
    alignas(64) float staged[kRankBlock];
    float* out = cb;
    if (cols < kRankBlock) {
      out = staged;
      std::fill(std::copy(cb, cb + (beta == 0.0f ? 0 : cols), staged), staged + kRankBlock, 0.0f);
    }
    Floats acc[kVectors];
    for (int q = 0; q < kVectors; ++q)
      acc[q] = beta == 0.0f ? Floats::all(0.0f) : Floats::all(beta) * Floats::load(out + Floats::kLanes * q);
    for (i64 p = 0; p < k; ++p, bp += kRankBlock) {
      const Floats sp = Floats::all(scale[p]);
      for (int q = 0; q < kVectors; ++q) acc[q] = Floats::fma(sp, Floats::load(bp + Floats::kLanes * q), acc[q]);
    }
    for (int q = 0; q < kVectors; ++q) acc[q].store(out + Floats::kLanes * q);
    if (out == staged) std::copy(staged, staged + cols, cb);
#else
    for (i64 j = 0; j < cols; ++j) {
      float sum = beta == 0.0f ? 0.0f : beta * cb[j];
      for (i64 p = 0; p < k; ++p) sum += scale[p] * bp[p * kRankBlock + j];
      cb[j] = sum;
    }
#endif
  };
  const i64 groups = (m + kRankRows - 1) / kRankRows;
#pragma omp parallel for if (m * n * k > kSmallProduct)
  for (i64 group = 0; group < groups; ++group) {
    const i64 i0 = group * kRankRows, i1 = std::min(m, i0 + kRankRows);
    float scale[kRankRows][kRankUpdate];
    for (i64 i = i0; i < i1; ++i)
      for (i64 p = 0; p < k; ++p) scale[i - i0][p] = alpha * a[i * lda + p];
    for (i64 block = 0; block < blocks; ++block) {
      const i64 j0 = block * kRankBlock, cols = std::min(kRankBlock, n - j0);
      const float* bp = packed.data() + block * k * kRankBlock;
      for (i64 i = i0; i < i1; ++i) row_block(scale[i - i0], c + i * ldc + j0, bp, cols);
    }
  }
}

// Products with few columns: a LoRA branch's x Aᵀ and g B ([n, r] from a long inner dimension)
// and gᵀ t ([out, r]), or, computed as its transpose, uᵀ x ([r, in]). BLAS packs both operands for
// them and splits them poorly over threads (40-60 GFLOP/s in a training step, a third of its
// speed on square products; 87 against our 125-170 alone, for r = 16). Here the narrow operand
// is packed once, k rows of kNarrowWidth floats or fewer, zero-padded to whole vectors, and a
// block of R rows of the result stays in registers for the whole inner dimension: per term, one
// vector load per packed vector and one broadcast per row feed R times as many multiply-adds.
#if defined(LORACPP_VECTOR_FLOATS)
// At most three vectors a row: with four (AVX2 at r = 32), BLAS was faster.
constexpr i64 kNarrowWidth = std::min(32, 3 * Floats::kLanes);

// The product's element (i, q) is sum over p of lhs(i, p) packed[p][q], where lhs(i, p) is
// lhs[i * ld + p], or lhs[p * ld + i] when it is read by columns. Element (i, q) goes to
// out[i * ldo + q], or to out[q * ldo + i] for a transposed result.
struct NarrowProduct {
  const float* lhs;
  i64 ld;
  const float* packed;
  i64 width;  // packed floats per term: the columns rounded up to whole vectors
  i64 columns, k;
  float alpha, beta;
  float* out;
  i64 ldo;
  bool transposed;

  // Rows of the result a thread takes at a time when lhs is read by columns, and terms per tile:
  // a tile of lhs (kTileTerms x kGroupRows) is copied to a contiguous buffer, so the kernel reads
  // it from L1 instead of one far-apart row of lhs (a page apart for wide matrices) per term.
  static constexpr i64 kGroupRows = 48;
  static constexpr i64 kTileTerms = 128;

  // acc += the `terms` terms of R rows: src points at row 0's term 0, and row r's term p is
  // src[r * ld + p], or src[p * ld + r] by columns.
  template <int R, int NV, bool kByColumns>
  static void accumulate(Floats (&acc)[R][NV], const float* src, i64 ld, i64 terms, const float* bp, i64 width) {
    for (i64 p = 0; p < terms; ++p, bp += width) {
      Floats b[NV];
      for (int v = 0; v < NV; ++v) b[v] = Floats::load(bp + Floats::kLanes * v);
      for (int r = 0; r < R; ++r) {
        const Floats x = Floats::all(kByColumns ? src[p * ld + r] : src[r * ld + p]);
        for (int v = 0; v < NV; ++v) acc[r][v] = Floats::fma(x, b[v], acc[r][v]);
      }
    }
  }

  // Writes row i of the result from its `width` sums.
  void emit(i64 i, const float* sums) const {
    if (!transposed && columns == width) {
      float* o = out + i * ldo;
      for (i64 q = 0; q < width; q += Floats::kLanes) {
        Floats y = Floats::all(alpha) * Floats::load(sums + q);
        if (beta != 0.0f) y = Floats::fma(Floats::all(beta), Floats::load(o + q), y);
        y.store(o + q);
      }
      return;
    }
    for (i64 q = 0; q < columns; ++q) {
      float& o = transposed ? out[q * ldo + i] : out[i * ldo + q];
      o = alpha * sums[q] + (beta == 0.0f ? 0.0f : beta * o);
    }
  }

  // R rows from i0, lhs read along its rows.
  template <int R, int NV>
  void block(i64 i0) const {
    Floats acc[R][NV];
    for (auto& row : acc)
      for (auto& v : row) v = Floats::all(0.0f);
    accumulate<R, NV, false>(acc, lhs + i0 * ld, ld, k, packed, width);
    alignas(64) float sums[NV * Floats::kLanes];
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < NV; ++v) acc[r][v].store(sums + Floats::kLanes * v);
      emit(i0 + r, sums);
    }
  }

  // Rows i0..i1 (at most kGroupRows), lhs read by columns, a tile at a time.
  template <int R, int NV>
  void column_group(i64 i0, i64 i1) const {
    const i64 rows = i1 - i0;
    alignas(64) float tile[kTileTerms * kGroupRows];
    alignas(64) float sums[kGroupRows * NV * Floats::kLanes] = {};
    for (i64 p0 = 0; p0 < k; p0 += kTileTerms) {
      const i64 terms = std::min(kTileTerms, k - p0);
      for (i64 p = 0; p < terms; ++p) {
        const float* from = lhs + (p0 + p) * ld + i0;
        float* to = tile + p * kGroupRows;
        if (rows == kGroupRows) {  // whole vectors, inline: a library copy per 192 bytes cost as much as the products
          static_assert(kGroupRows % Floats::kLanes == 0);
          for (i64 q = 0; q < kGroupRows; q += Floats::kLanes) Floats::load(from + q).store(to + q);
        } else {
          std::copy_n(from, rows, to);
        }
      }
      const float* bp = packed + p0 * width;
      auto rows_from = [&]<int kRows>(i64 r0) {
        Floats acc[kRows][NV];
        float* s0 = sums + r0 * width;
        for (int r = 0; r < kRows; ++r)
          for (int v = 0; v < NV; ++v) acc[r][v] = Floats::load(s0 + r * width + Floats::kLanes * v);
        accumulate<kRows, NV, true>(acc, tile + r0, kGroupRows, terms, bp, width);
        for (int r = 0; r < kRows; ++r)
          for (int v = 0; v < NV; ++v) acc[r][v].store(s0 + r * width + Floats::kLanes * v);
      };
      i64 r0 = 0;
      for (; r0 + R <= rows; r0 += R) rows_from.template operator()<R>(r0);
      for (; r0 < rows; ++r0) rows_from.template operator()<1>(r0);
    }
    for (i64 r = 0; r < rows; ++r) emit(i0 + r, sums + r * width);
  }

  template <int NV, bool kByColumns>
  void rows(i64 count) const {
    constexpr int R = 12 / NV;  // R NV accumulators, NV loaded vectors and a broadcast: 16 registers at most
    static_assert(kGroupRows % R == 0);
    const i64 step = kByColumns ? kGroupRows : R;
    const i64 pieces = (count + step - 1) / step;
#pragma omp parallel for schedule(static) if (count * columns * k > kSmallProduct)
    for (i64 piece = 0; piece < pieces; ++piece) {
      const i64 i0 = piece * step, i1 = std::min(count, i0 + step);
      if (kByColumns) {
        column_group<R, NV>(i0, i1);
      } else if (i1 - i0 == R) {
        block<R, NV>(i0);
      } else {
        for (i64 i = i0; i < i1; ++i) block<1, NV>(i);
      }
    }
  }

  void run(i64 count, bool by_columns) const {
    const i64 vectors = width / Floats::kLanes;
    auto with = [&]<int NV>() { by_columns ? rows<NV, true>(count) : rows<NV, false>(count); };
    if (vectors == 1) with.template operator()<1>();
    else if (vectors == 2) with.template operator()<2>();
    else with.template operator()<3>();
  }
};

// op(b)'s k x n values (n at most kNarrowWidth), each of the k rows zero-padded to whole vectors.
std::vector<float> pack_narrow(bool trans_b, i64 n, i64 k, const float* b, i64 ldb, i64 width) {
  std::vector<float> packed(static_cast<std::size_t>(k * width), 0.0f);
  for (i64 p = 0; p < k; ++p)
    for (i64 q = 0; q < n; ++q) packed[static_cast<std::size_t>(p * width + q)] = trans_b ? b[q * ldb + p] : b[p * ldb + q];
  return packed;
}

i64 padded_width(i64 n) { return (n + Floats::kLanes - 1) / Floats::kLanes * Floats::kLanes; }

// c = alpha op(a) op(b) + beta c with n <= kNarrowWidth, a transposed or b, not both.
void narrow_product(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                    const float* b, i64 ldb, float beta, float* c, i64 ldc) {
  const i64 width = padded_width(n);
  const std::vector<float> packed = pack_narrow(trans_b, n, k, b, ldb, width);
  NarrowProduct{a, lda, packed.data(), width, n, k, alpha, beta, c, ldc, false}.run(m, trans_a);
}

// c = alpha aᵀ b + beta c with m <= kNarrowWidth (a is [k, m], b [k, n]): the transpose bᵀ a, whose
// rows are b's columns, written transposed into c.
void narrow_transposed_product(i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b, i64 ldb,
                               float beta, float* c, i64 ldc) {
  const i64 width = padded_width(m);
  const std::vector<float> packed = pack_narrow(false, m, k, a, lda, width);
  NarrowProduct{b, ldb, packed.data(), width, m, k, alpha, beta, c, ldc, true}.run(n, true);
}
#endif
}  // namespace

void gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
          i64 ldb, float beta, float* c, i64 ldc) {
  count_gemm(m, n, k);
  if (m == 0 || n == 0) return;
  if (m * n * k <= kSmallProduct) {  // e.g. a LoRA branch on one token: a library call costs more than the work
#if defined(__AVX2__) && defined(__FMA__)
    if (!trans_a && trans_b && k % 8 == 0 && k <= 32 && k > 0)
      return short_dot_products(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
    small_product(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (m == 1 && trans_b && !trans_a) return one_row_dot_products(n, k, alpha, a, b, ldb, beta, c);
  if (m == 1) {  // one row against b's columns: a matrix-vector product, which BLAS runs without packing b
    cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, static_cast<blasint>(trans_b ? n : k),
                static_cast<blasint>(trans_b ? k : n), alpha, b, static_cast<blasint>(ldb), a,
                static_cast<blasint>(trans_a ? lda : 1), beta, c, 1);
    return;
  }
  if (k <= kRankUpdate && !trans_a) return rank_update(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#if defined(LORACPP_VECTOR_FLOATS)
  if (n <= kNarrowWidth && !(trans_a && trans_b))
    return narrow_product(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (m <= kNarrowWidth && trans_a && !trans_b)
    return narrow_transposed_product(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
  f32_library_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void f32_library_gemm(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                      const float* b, i64 ldb, float beta, float* c, i64 ldc) {
#if defined(LORACPP_HAVE_ONEDNN)
  if (f32_products_through_onednn() &&
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == dnnl_success)
    return;
#endif
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// Debian 12's OpenBLAS (0.3.21) knows AMD's CPUs up to Zen 3 and runs its AVX2 kernels on Zen 4 and
// Zen 5 (it names them Haswell): a 2048³ product at 187-196 GFLOP/s on a 2-core Zen 5, where
// oneDNN's sgemm, which picks its kernels by the CPU's instruction sets, runs 350-377 (276 with
// 2048 terms against a transposed b). So wherever the CPU has AVX-512, oneDNN takes the large f32
// products. LORACPP_F32_GEMM=openblas or =onednn chooses either (oneDNN where the build has it).
bool f32_products_through_onednn() {
  static const bool chosen = [] {
    const char* choice = std::getenv("LORACPP_F32_GEMM");
    const std::string_view asked = choice == nullptr ? "" : choice;
    check(asked.empty() || asked == "openblas" || asked == "onednn", "gemm",
          "LORACPP_F32_GEMM must be openblas or onednn, not '{}'", asked);
#if defined(LORACPP_HAVE_ONEDNN)
    if (!asked.empty()) return asked == "onednn";
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return false;  // a build without oneDNN has OpenBLAS only
#endif
  }();
  return chosen;
}

}  // namespace loracpp::backend::cpu
