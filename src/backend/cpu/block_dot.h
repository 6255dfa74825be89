#pragma once
// Dot products against weight rows stored in blocks (core/q8_0.h, core/q4_0.h), read in place: a
// generated token's layers over q8_0 weights read 34 bytes for 32 weights and over q4_0 18, against
// bf16's 64, and the decode path is bound by reading the weights. Shared by gemm_blocks and
// lora_rows. Each format widens one block into two halves of 16 floats, values 0-15 and 16-31,
// scaled by the block's d; or, for rows quantised to 8 bits (Q8Rows, where the CPU has AVX512-VNNI),
// gives its 32 codes as unsigned bytes for integer dot products.
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || defined(__F16C__)
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

#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define LORACPP_Q8_ROWS 1
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
#endif
#if defined(LORACPP_Q8_ROWS)
  // The 32 codes q as the bytes q + 128 (the top bit flipped), in order.
  static constexpr int kCodeOffset = 128;
  static __m256i unsigned_codes(const std::uint8_t* block) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
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
#endif
#if defined(LORACPP_Q8_ROWS)
  // The 32 stored codes c (value c - 8), in order: the 16 bytes in both halves, the upper half's
  // 16-bit lanes shifted right by four, each byte's low four bits kept.
  static constexpr int kCodeOffset = 8;
  static __m256i unsigned_codes(const std::uint8_t* block) {
    const __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
    const __m256i shifts = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
    return _mm256_and_si256(_mm256_srlv_epi16(bytes, shifts), _mm256_set1_epi8(0x0F));
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
// `Format` stores codes u = value code + Format::kCodeOffset as unsigned bytes, so a run's integer
// sum of u q, less kCodeOffset times the sum of q, is its sum of code times q: that correction
// (`starts`, in the first of eight lanes) is where each run's sum starts.
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
      const __m512 lo = _mm512_loadu_ps(run), hi = _mm512_loadu_ps(run + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
      const __m512 inverse = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
      // Rounded to nearest by the default rounding mode.
      const __m512i qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, inverse));
      const __m512i qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, inverse));
      std::int8_t* codes = out.codes.data() + i * k + b * 32;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(qlo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtepi32_epi8(qhi));
      const std::size_t at = static_cast<std::size_t>(i * runs + b);
      out.scales[at] = amax / 127.0f;
      out.starts[at * 8] = -Format::kCodeOffset * _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
    }
}

// out[i] = sum over blocks of d_w d_x (sum of code times q) for each quantised row i of x (at most
// 8) against one weight row w of x.k values: a block's codes are made once for every row; each
// run's integer sum (vpdpbusd) is scaled in f32, into two accumulators for a single row.
template <class Format>
void dot_block_rows_q8(const Q8Rows& x, const std::uint8_t* w, float* out) {
  const i64 blocks = x.k / 32;
  const auto term = [&](__m256i codes, i64 i, i64 b, __m256 dw) {
    const std::size_t at = static_cast<std::size_t>(i * blocks + b);
    const __m256i sum = _mm256_dpbusd_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.starts.data() + at * 8)), codes,
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.codes.data() + i * x.k + b * 32)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(x.scales[at])), dw);
  };
  const auto scale_of = [](const std::uint8_t* block) {
    std::uint16_t d;
    std::memcpy(&d, block, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(d)));
  };
  const auto sum8 = [](__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  };
  if (x.rows == 1) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    i64 b = 0;
    for (; b + 1 < blocks; b += 2, w += 2 * Format::kBlockBytes) {
      acc0 = _mm256_add_ps(acc0, term(Format::unsigned_codes(w), 0, b, scale_of(w)));
      const std::uint8_t* next = w + Format::kBlockBytes;
      acc1 = _mm256_add_ps(acc1, term(Format::unsigned_codes(next), 0, b + 1, scale_of(next)));
    }
    if (b < blocks) acc0 = _mm256_add_ps(acc0, term(Format::unsigned_codes(w), 0, b, scale_of(w)));
    out[0] = sum8(_mm256_add_ps(acc0, acc1));
    return;
  }
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (i64 b = 0; b < blocks; ++b, w += Format::kBlockBytes) {
    const __m256i codes = Format::unsigned_codes(w);
    const __m256 dw = scale_of(w);
    for (i64 i = 0; i < x.rows; ++i) acc[i] = _mm256_add_ps(acc[i], term(codes, i, b, dw));
  }
  for (i64 i = 0; i < x.rows; ++i) out[i] = sum8(acc[i]);
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
