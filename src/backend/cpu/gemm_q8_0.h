#pragma once
// Dot products against q8_0 weight rows (core/q8_0.h), read in place: a generated token's layers
// over q8_0 weights read 34 bytes for 32 weights, against bf16's 64, and the decode path is bound
// by reading the weights. Shared by gemm_q8_0 and lora_rows.
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "backend/kernels.h"
#include "core/dtype.h"
#include "core/q8_0.h"

namespace loracpp::backend::cpu {

#if defined(__AVX512F__)
// A block's 16 int8 values from `at` as floats (the zero-masked forms: GCC 12 warns of the plain
// ones' undefined pass-through operand).
inline __m512 widen_int8(const std::uint8_t* at) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
  return _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepi8_epi32(0xffff, q));
}
inline float sum_lanes(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  return sum;
}
#endif

inline float q8_0_scale(const std::uint8_t* block) {
  std::uint16_t d;
  std::memcpy(&d, block, 2);
#if defined(__F16C__)
  return _cvtsh_ss(d);
#else
  return f16_to_float(d);
#endif
}

// One row of x against one weight row: two accumulators, so that successive blocks' multiply-adds
// do not wait on each other.
inline float dot_q8_0(const float* x, const std::uint8_t* w, i64 k) {
#if defined(__AVX512F__)
  const i64 blocks = k / q8_0::kBlock;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (i64 b = 0; b < blocks; ++b, w += q8_0::kBlockBytes, x += q8_0::kBlock) {
    const __m512 d = _mm512_set1_ps(q8_0_scale(w));
    const __m512 lo = widen_int8(w + 2);
    const __m512 hi = widen_int8(w + 18);
    const __m512 sum = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), hi, _mm512_mul_ps(_mm512_loadu_ps(x), lo));
    if (b & 1)
      acc1 = _mm512_fmadd_ps(sum, d, acc1);
    else
      acc0 = _mm512_fmadd_ps(sum, d, acc0);
  }
  return sum_lanes(_mm512_add_ps(acc0, acc1));
#else
  float out = 0;
  for (i64 b = 0; b < k / q8_0::kBlock; ++b, w += q8_0::kBlockBytes, x += q8_0::kBlock) {
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (i64 p = 0; p < q8_0::kBlock; ++p) sum += x[p] * static_cast<float>(static_cast<std::int8_t>(w[2 + p]));
    out += sum * q8_0_scale(w);
  }
  return out;
#endif
}

// out[i] = sum over p < k of x[i][p] w[p] for `rows` rows of x (at most 8, lda apart) against one
// weight row w of k values (a whole number of blocks). Each block is widened once for every row.
inline void dot_q8_0_rows(const float* x, i64 lda, i64 rows, const std::uint8_t* w, i64 k, float* out) {
  if (rows == 1) {
    out[0] = dot_q8_0(x, w, k);
    return;
  }
  const i64 blocks = k / q8_0::kBlock;
#if defined(__AVX512F__)
  __m512 acc[8] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (i64 b = 0; b < blocks; ++b, w += q8_0::kBlockBytes) {
    const __m512 d = _mm512_set1_ps(q8_0_scale(w));
    const __m512 lo = _mm512_mul_ps(d, widen_int8(w + 2));
    const __m512 hi = _mm512_mul_ps(d, widen_int8(w + 18));
    const float* xb = x + b * q8_0::kBlock;
    for (i64 i = 0; i < rows; ++i) {
      acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + i * lda), lo, acc[i]);
      acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + i * lda + 16), hi, acc[i]);
    }
  }
  for (i64 i = 0; i < rows; ++i) out[i] = sum_lanes(acc[i]);
#else
  for (i64 i = 0; i < rows; ++i) out[i] = 0;
  for (i64 b = 0; b < blocks; ++b, w += q8_0::kBlockBytes) {
    const float d = q8_0_scale(w);
    float widened[q8_0::kBlock];
#pragma omp simd
    for (i64 p = 0; p < q8_0::kBlock; ++p) widened[p] = d * static_cast<float>(static_cast<std::int8_t>(w[2 + p]));
    for (i64 i = 0; i < rows; ++i) {
      const float* xb = x + i * lda + b * q8_0::kBlock;
      float sum = 0;
#pragma omp simd reduction(+ : sum)
      for (i64 p = 0; p < q8_0::kBlock; ++p) sum += xb[p] * widened[p];
      out[i] += sum;
    }
  }
#endif
}

}  // namespace loracpp::backend::cpu
