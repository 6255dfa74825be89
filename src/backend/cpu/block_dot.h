#pragma once
// Dot products against weight rows stored in blocks (core/q8_0.h, core/q4_0.h), read in place: a
// generated token's layers over q8_0 weights read 34 bytes for 32 weights and over q4_0 18, against
// bf16's 64, and the decode path is bound by reading the weights. Shared by gemm_blocks and
// lora_rows. Each format widens one block into two halves of 16 floats, values 0-15 and 16-31,
// scaled by the block's d.
#include <cstdint>
#include <cstring>

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
