#pragma once
// Dot products against weight rows stored in blocks (core/q8_0.h, core/q4_0.h), read in place: a
// generated token's layers over q8_0 weights read 34 bytes for 32 weights and over q4_0 18, against
// bf16's 64, and the decode path is bound by reading the weights. Shared by gemm_blocks and
// lora_rows. Each format widens one block into floats scaled by the block's d (two vectors of 16
// with AVX-512, four of 8 with AVX2); or, for rows quantised to 8 bits (Q8Rows, where the CPU has
// AVX512-VNNI or AVX2), gives its 32 codes as bytes for integer dot products.
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "backend/cpu/vec_math.h"
#include "backend/kernels.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/q4_0.h"
#include "core/q8_0.h"

namespace loracpp::backend::cpu {

inline float block_scale(const std::uint8_t* block) {
#if defined(__F16C__)
  std::uint16_t d;
  std::memcpy(&d, block, 2);
  return _cvtsh_ss(d);
#else
  return load_f16(block);
#endif
}

// Integer dot products of bytes: four products a 32-bit lane in one instruction (vpdpbusd) with
// AVX512-VNNI, else pairs in 16 bits (vpmaddubsw) widened to 32 (vpmaddwd) with AVX2.
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define LORACPP_Q8_ROWS_VNNI 1
#endif
#if defined(LORACPP_Q8_ROWS_VNNI) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#define LORACPP_Q8_ROWS 1
#endif

#if defined(LORACPP_Q8_ROWS)
// start + in each 32-bit lane the sum of its four products u q, u unsigned bytes and q signed. The
// AVX2 form sums pairs in 16 bits with saturation, so u q + u' q' must stay within ±32767: true for
// q4_0's codes (u < 16) and for q8_0's magnitudes (u <= 128, |q| <= 127).
inline __m256i add_byte_products(__m256i start, __m256i u, __m256i q) {
#if defined(LORACPP_Q8_ROWS_VNNI)
  return _mm256_dpbusd_epi32(start, u, q);
#else
  return _mm256_add_epi32(start, _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1)));
#endif
}
#endif

#if defined(__AVX512F__)
// A tree of halving adds (vec_math.h's sum): a loop over the 16 lanes was one dependent chain of
// scalar adds, a third of a 768-value row's time.
inline float sum_lanes(__m512 v) { return Floats{v}.sum(); }
#endif

struct Q8_0Format {
  static constexpr i64 kBlock = q8_0::kBlock;
  static constexpr std::size_t kBlockBytes = q8_0::kBlockBytes;
  // Value p of a block, unscaled.
  static float code(const std::uint8_t* block, i64 p) { return static_cast<float>(static_cast<std::int8_t>(block[2 + p])); }
#if defined(__AVX512F__)
  // 16 int8 values from `at` as floats (the zero-masked forms: GCC 12 warns of the plain ones'
  // undefined pass-through operand).
  static __m512 widen16(const std::uint8_t* at) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
    return _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepi8_epi32(0xffff, q));
  }
  static void widen(const std::uint8_t* block, __m512 d, __m512& lo, __m512& hi) {
    lo = _mm512_mul_ps(d, widen16(block + 2));
    hi = _mm512_mul_ps(d, widen16(block + 18));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  // Values 0-7, 8-15, 16-23 and 24-31.
  static void widen(const std::uint8_t* block, __m256 d, __m256 (&v)[4]) {
    for (int q = 0; q < 4; ++q)
      v[q] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                  _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * q)))));
  }
#endif
#if defined(LORACPP_Q8_ROWS_VNNI)
  // The 32 codes c as the bytes c + 128 (the top bit flipped), in order.
  static constexpr int kCodeOffset = 128;
  using Codes = __m256i;
  static Codes codes(const std::uint8_t* block) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static __m256i add_products(const Codes& codes, __m256i q, __m256i start) {
    return add_byte_products(start, codes, q);
  }
#elif defined(LORACPP_Q8_ROWS)
  // The codes c as they are and their magnitudes |c|, which multiply q with c's signs: c + 128 would
  // overflow vpmaddubsw's 16-bit pair sums.
  static constexpr int kCodeOffset = 0;
  struct Codes {
    __m256i signs, magnitudes;
  };
  static Codes codes(const std::uint8_t* block) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
    return {c, _mm256_sign_epi8(c, c)};
  }
  static __m256i add_products(const Codes& codes, __m256i q, __m256i start) {
    return add_byte_products(start, codes.magnitudes, _mm256_sign_epi8(q, codes.signs));
  }
#endif
};

struct Q4_0Format {
  static constexpr i64 kBlock = q4_0::kBlock;
  static constexpr std::size_t kBlockBytes = q4_0::kBlockBytes;
  static float code(const std::uint8_t* block, i64 p) {
    const std::uint8_t byte = block[2 + (p & 15)];
    return static_cast<float>((p < 16 ? byte & 0x0F : byte >> 4) - 8);
  }
#if defined(__AVX512F__)
  // The 16 code bytes zero-extended to 32-bit lanes; a permute of the 16 scaled levels (-8 .. 7) d
  // by each lane's low four bits gives values 0-15, by the lane shifted right by four 16-31.
  static void widen(const std::uint8_t* block, __m512 d, __m512& lo, __m512& hi) {
    const __m512 levels = _mm512_mul_ps(
        d, _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
    const __m512i bytes =
        _mm512_maskz_cvtepu8_epi32(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
    lo = _mm512_maskz_permutexvar_ps(0xffff, bytes, levels);
    hi = _mm512_maskz_permutexvar_ps(0xffff, _mm512_maskz_srli_epi32(0xffff, bytes, 4), levels);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  // Values 0-7, 8-15 (the low four bits of bytes 0-7, 8-15), 16-23 and 24-31 (the high four): c d - 8 d.
  static void widen(const std::uint8_t* block, __m256 d, __m256 (&v)[4]) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i low = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
    const __m256 offset = _mm256_mul_ps(d, _mm256_set1_ps(8.0f));
    const auto level = [&](__m128i codes) {
      return _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)), d, offset);
    };
    v[0] = level(low);
    v[1] = level(_mm_srli_si128(low, 8));
    v[2] = level(high);
    v[3] = level(_mm_srli_si128(high, 8));
  }
#endif
#if defined(LORACPP_Q8_ROWS)
  // The 32 stored codes c (value c - 8), in order: the 16 bytes' low four bits, then their high four.
  static constexpr int kCodeOffset = 8;
  using Codes = __m256i;
  static Codes codes(const std::uint8_t* block) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), _mm256_set1_epi8(0x0F));
  }
  static __m256i add_products(const Codes& codes, __m256i q, __m256i start) {
    return add_byte_products(start, codes, q);
  }
#endif
};

// out[i] = sum over p < k of x[i][p] w[p] for `rows` rows of x (at most 8, lda apart) against one
// weight row w of k values (a whole number of blocks). Each block is widened once for every row;
// a single row keeps two accumulators, so that successive blocks' multiply-adds do not wait on
// each other.
template <class Format>
void dot_block_rows(const float* x, i64 lda, i64 rows, const std::uint8_t* w, i64 k, float* out) {
  const i64 blocks = k / Format::kBlock;
#if defined(__AVX512F__)
  if (rows == 1) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes, x += Format::kBlock) {
      __m512 lo, hi;
      Format::widen(w, _mm512_set1_ps(block_scale(w)), lo, hi);
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x), lo, acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), hi, acc1);
    }
    out[0] = sum_lanes(_mm512_add_ps(acc0, acc1));
    return;
  }
  __m512 acc[8] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes) {
    __m512 lo, hi;
    Format::widen(w, _mm512_set1_ps(block_scale(w)), lo, hi);
    const float* xb = x + b * Format::kBlock;
    for (i64 i = 0; i < rows; ++i) {
      acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + i * lda), lo, acc[i]);
      acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + i * lda + 16), hi, acc[i]);
    }
  }
  for (i64 i = 0; i < rows; ++i) out[i] = sum_lanes(acc[i]);
#elif defined(__AVX2__) && defined(__FMA__)
  // Four accumulators for a single row (one a quarter of each block); one a row for more.
  if (rows == 1) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes, x += Format::kBlock) {
      __m256 v[4];
      Format::widen(w, _mm256_set1_ps(block_scale(w)), v);
      for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8 * q), v[q], acc[q]);
    }
    out[0] = sum_lanes(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    return;
  }
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes) {
    __m256 v[4];
    Format::widen(w, _mm256_set1_ps(block_scale(w)), v);
    const float* xb = x + b * Format::kBlock;
    for (i64 i = 0; i < rows; ++i)
      for (int q = 0; q < 4; ++q) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + i * lda + 8 * q), v[q], acc[i]);
  }
  for (i64 i = 0; i < rows; ++i) out[i] = sum_lanes(acc[i]);
#else
  for (i64 i = 0; i < rows; ++i) out[i] = 0;
  for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes) {
    const float d = block_scale(w);
    float widened[Format::kBlock];
    for (i64 p = 0; p < Format::kBlock; ++p) widened[p] = d * Format::code(w, p);
    for (i64 i = 0; i < rows; ++i) {
      const float* xb = x + i * lda + b * Format::kBlock;
      float sum = 0;
#pragma omp simd reduction(+ : sum)
      for (i64 p = 0; p < Format::kBlock; ++p) sum += xb[p] * widened[p];
      out[i] += sum;
    }
  }
#endif
}

#if defined(LORACPP_Q8_ROWS)
// GCC 12 warns of the reductions' and conversions' undefined pass-through operands (as vec_math.h).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// A few rows quantised for integer products against blocks, as llama.cpp quantises a generated
// token's activations: each run of 32 values becomes 32 int8 codes q and an f32 scale d, the run's
// largest magnitude over 127, each value rounded to the nearest code (ties to even). A block of
// `Format` gives its codes as Format::Codes, whose products with q (Format::add_products) sum
// code + Format::kCodeOffset times q: less kCodeOffset times the sum of q, the run's sum of code
// times q. That correction (`starts`, in the first of eight lanes) is where each run's sum starts.
struct Q8Rows {
  i64 rows = 0, k = 0;
  std::vector<std::int8_t> codes;     // [rows, k]
  std::vector<float> scales;          // [rows, k / 32]
  std::vector<std::int32_t> starts;   // [rows, k / 32, 8]
};

template <class Format>
void quantize_q8_rows(const float* x, i64 lda, i64 rows, i64 k, Q8Rows& out) {
  const i64 runs = k / 32;
  out.rows = rows;
  out.k = k;
  out.codes.resize(static_cast<std::size_t>(rows * k));
  out.scales.resize(static_cast<std::size_t>(rows * runs));
  out.starts.assign(static_cast<std::size_t>(rows * runs * 8), 0);
  for (i64 i = 0; i < rows; ++i)
    for (i64 b = 0; b < runs; ++b) {
      const float* run = x + i * lda + b * 32;
      std::int8_t* codes = out.codes.data() + i * k + b * 32;
      const std::size_t at = static_cast<std::size_t>(i * runs + b);
#if defined(__AVX512F__)
      const __m512 lo = _mm512_loadu_ps(run), hi = _mm512_loadu_ps(run + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
      const __m512 inverse = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
      // Rounded to nearest by the default rounding mode.
      const __m512i qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, inverse));
      const __m512i qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, inverse));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(qlo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtepi32_epi8(qhi));
      const std::int32_t code_sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
#else
      __m256 v[4];
      __m256 largest = _mm256_setzero_ps();
      for (int q = 0; q < 4; ++q) {
        v[q] = _mm256_loadu_ps(run + 8 * q);
        largest = _mm256_max_ps(largest, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v[q]));
      }
      const float amax = largest_lane(largest);
      const __m256 inverse = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
      __m256i q32[4];
      for (int q = 0; q < 4; ++q) q32[q] = _mm256_cvtps_epi32(_mm256_mul_ps(v[q], inverse));
      // Packing narrows within each 128-bit half: the permute puts the four runs of 8 back in order.
      const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q32[0], q32[1]), _mm256_packs_epi32(q32[2], q32[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes),
                          _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
      const __m256i sums = _mm256_add_epi32(_mm256_add_epi32(q32[0], q32[1]), _mm256_add_epi32(q32[2], q32[3]));
      __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
      sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0x4e));
      const std::int32_t code_sum = _mm_cvtsi128_si32(_mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0xb1)));
#endif
      out.scales[at] = amax / 127.0f;
      out.starts[at * 8] = -Format::kCodeOffset * code_sum;
    }
}

// acc + quantised row i's integer sum over its run b (against a block's codes) times d_x d_w.
template <class Format>
__m256 add_q8_term(const Q8Rows& x, __m256 acc, const typename Format::Codes& codes, i64 i, i64 b, __m256 dw) {
  const std::size_t at = static_cast<std::size_t>(i * (x.k / 32) + b);
  const __m256i sum = Format::add_products(
      codes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.codes.data() + i * x.k + b * 32)),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.starts.data() + at * 8)));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(_mm256_set1_ps(x.scales[at]), dw), acc);
}

// A block's d in every lane.
inline __m256 block_scale_lanes(const std::uint8_t* block) {
  std::uint16_t d;
  std::memcpy(&d, block, 2);
  return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(d)));
}

// The sum of `start`'s lanes and of a single quantised row x's products with the weight row w,
// into two accumulators. `start` carries what a caller adds to the row's dot product (an unmerged
// adapter's term, lora_rows) for the price of the lanes it fills.
template <class Format>
float dot_block_row_q8(const Q8Rows& x, const std::uint8_t* w, __m256 start) {
  const i64 blocks = x.k / 32;
  __m256 acc0 = start, acc1 = _mm256_setzero_ps();
  i64 b = 0;
  for (; b + 1 < blocks; b += 2, w += 2 * Format::kBlockBytes) {
    acc0 = add_q8_term<Format>(x, acc0, Format::codes(w), 0, b, block_scale_lanes(w));
    const std::uint8_t* next = w + Format::kBlockBytes;
    acc1 = add_q8_term<Format>(x, acc1, Format::codes(next), 0, b + 1, block_scale_lanes(next));
  }
  if (b < blocks) acc0 = add_q8_term<Format>(x, acc0, Format::codes(w), 0, b, block_scale_lanes(w));
  return sum_lanes(_mm256_add_ps(acc0, acc1));
}

// out[i] = sum over blocks of d_w d_x (sum of code times q) for each quantised row i of x (at most
// 8) against one weight row w of x.k values: a block's codes are made once for every row; each
// run's integer sum is scaled in f32, into two accumulators for a single row.
template <class Format>
void dot_block_rows_q8(const Q8Rows& x, const std::uint8_t* w, float* out) {
  const i64 blocks = x.k / 32;
  if (x.rows == 1) {
    out[0] = dot_block_row_q8<Format>(x, w, _mm256_setzero_ps());
    return;
  }
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes) {
    const typename Format::Codes codes = Format::codes(w);
    const __m256 dw = block_scale_lanes(w);
    for (i64 i = 0; i < x.rows; ++i) acc[i] = add_q8_term<Format>(x, acc[i], codes, i, b, dw);
  }
  for (i64 i = 0; i < x.rows; ++i) out[i] = sum_lanes(acc[i]);
}
#pragma GCC diagnostic pop
#endif

// Calls f with the format of a block dtype (Q8_0Format or Q4_0Format); throws for another dtype.
template <class F>
decltype(auto) with_block_format(DType dtype, F&& f) {
  switch (dtype) {
    case DType::q8_0: return f(Q8_0Format{});
    case DType::q4_0: return f(Q4_0Format{});
    default: fail("block_dot", "{} is not stored in blocks", dtype_name(dtype));
  }
}

}  // namespace loracpp::backend::cpu
