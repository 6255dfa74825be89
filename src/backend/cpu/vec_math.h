#pragma once
// exp over arrays, for softmax and cross-entropy: the polynomial of Cephes' expf on
// [-ln2/2, ln2/2] scaled by 2^n through the exponent bits; within 2 ulp of std::exp over the
// normal range, 0 below it (so exp(-inf) = 0, as masked scores need), inf above. With AVX-512
// sixteen at a time (GCC 12 does not vectorise the scalar form), else one at a time.
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// GCC 12 reports its own AVX-512 headers' undefined-vector idiom as maybe-uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace loracpp::backend::cpu {

inline float fast_exp(float x) {
  const float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = __builtin_roundevenf(clamped * 1.44269504088896341f);
  const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = (p * r * r + r) + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float pow2;
  std::memcpy(&pow2, &bits, sizeof pow2);
  return x < -87.0f ? 0.0f : (x > 88.0f ? __builtin_inff() : e * pow2);
}

#if defined(__AVX512F__)
inline __m512 fast_exp16(__m512 x) {
  const __m512 clamped = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), clamped);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  __m512 y = _mm512_mul_ps(e, _mm512_castsi512_ps(bits));
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ), y, _mm512_setzero_ps());
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(88.0f), _CMP_GT_OQ), y,
                              _mm512_set1_ps(__builtin_inff()));
}
#endif

// The largest of x[0..n), -inf when n is 0; a NaN among them is passed over, as std::max(max, x[i])
// passes it over (GCC does not vectorise that loop: the order of a float max is not free to change).
inline float max_of(const float* x, std::int64_t n) {
  std::int64_t i = 0;
  float max = -__builtin_inff();
#if defined(__AVX512F__)
  __m512 acc = _mm512_set1_ps(max);
  for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(_mm512_loadu_ps(x + i), acc);  // a NaN lane keeps acc
  max = _mm512_reduce_max_ps(acc);
#endif
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  return max;
}

// out[i] = exp(x[i] - shift) * scale; returns the sum of the out[i].
inline float exp_shifted(const float* x, float shift, float scale, float* out, std::int64_t n) {
  std::int64_t i = 0;
  float sum = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  const __m512 s = _mm512_set1_ps(shift), k = _mm512_set1_ps(scale);
  for (; i + 16 <= n; i += 16) {
    const __m512 y = _mm512_mul_ps(fast_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)), k);
    if (out) _mm512_storeu_ps(out + i, y);
    acc = _mm512_add_ps(acc, y);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    const float y = fast_exp(x[i] - shift) * scale;
    if (out) out[i] = y;
    sum += y;
  }
  return sum;
}

// s[i] = 1 / (1 + exp(-x[i])), through the same exp.
inline void sigmoid_array(const float* x, float* s, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 e = fast_exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(x + i)));
    _mm512_storeu_ps(s + i, _mm512_div_ps(one, _mm512_add_ps(one, e)));
  }
#endif
  for (; i < n; ++i) s[i] = 1.0f / (1.0f + fast_exp(-x[i]));
}

}  // namespace loracpp::backend::cpu

#pragma GCC diagnostic pop
