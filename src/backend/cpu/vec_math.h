#pragma once
// exp over arrays, for softmax and cross-entropy: the polynomial of Cephes' expf on
// [-ln2/2, ln2/2] scaled by 2^n through the exponent bits; within 2 ulp of std::exp over the
// normal range, 0 below it (so exp(-inf) = 0, as masked scores need), inf above. GCC 12 does not
// vectorise the scalar form, so the array functions run it on the widest vectors the build targets
// (sixteen floats with AVX-512, eight with AVX2), through the few operations of `Floats` below,
// and over the tail in one masked vector with AVX-512 (one at a time with AVX2).
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define LORACPP_VECTOR_FLOATS 1
#endif

// GCC 12 reports its own AVX-512 headers' undefined-vector idiom as (maybe) uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

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

#if defined(LORACPP_VECTOR_FLOATS)
// The sum and the largest of eight floats, by halving (also for 256-bit kernels in AVX-512 builds).
inline float sum_lanes(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}
inline float largest_lane(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
}

// Lane q of the result: the sum of rows[q]'s eight lanes. Summed across together by pairwise adds
// (about two operations a row), where one horizontal sum each would cost more than a short dot
// product's multiplications.
inline __m256 sums_of_eight(const __m256 (&rows)[8]) {
  // Lane q of each 128-bit half of `quarter` holds half of row q's sum (rows 0-3, then 4-7).
  const __m256 pairs01 = _mm256_hadd_ps(rows[0], rows[1]), pairs23 = _mm256_hadd_ps(rows[2], rows[3]);
  const __m256 pairs45 = _mm256_hadd_ps(rows[4], rows[5]), pairs67 = _mm256_hadd_ps(rows[6], rows[7]);
  const __m256 quarter03 = _mm256_hadd_ps(pairs01, pairs23), quarter47 = _mm256_hadd_ps(pairs45, pairs67);
  return _mm256_add_ps(_mm256_permute2f128_ps(quarter03, quarter47, 0x20),
                       _mm256_permute2f128_ps(quarter03, quarter47, 0x31));
}

// Eight bf16 values from p as floats.
inline __m256 widen_bf16_eight(const std::uint16_t* p) {
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

// One vector of floats and what the kernels do with it. max(a, b) returns b where either is a NaN
// (both instruction sets' rule), which max_of relies on.
struct Floats {
#if defined(__AVX512F__)
  using Raw = __m512;
  static constexpr int kLanes = 16;
#else
  using Raw = __m256;
  static constexpr int kLanes = 8;
#endif
  Raw v;

#if defined(__AVX512F__)
  static Floats all(float x) { return {_mm512_set1_ps(x)}; }
  static Floats load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Floats load_bf16(const std::uint16_t* p) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_maskz_cvtepu16_epi32(0xffff, raw), 16))};
  }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  // The first n lanes (0 < n < kLanes) from p, the others `rest`; stored to p, the others untouched.
  static Floats load_first(const float* p, int n, float rest) {
    return {_mm512_mask_loadu_ps(_mm512_set1_ps(rest), first_lanes(n), p)};
  }
  void store_first(float* p, int n) const { _mm512_mask_storeu_ps(p, first_lanes(n), v); }
  void store_bf16_first(std::uint16_t* p, int n) const {
#if defined(__AVX512BF16__)
    _mm256_mask_storeu_epi16(p, first_lanes(n), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
#else
    alignas(64) float lanes[kLanes];
    store(lanes);
    for (int i = 0; i < n; ++i) p[i] = float_to_bf16(lanes[i]);
#endif
  }
  static __mmask16 first_lanes(int n) { return static_cast<__mmask16>((1u << n) - 1); }
  // The lanes rounded to bf16 (to nearest, ties to even; as to_bf16 below, inputs under f32's
  // normal range become zero where the build has AVX512-BF16's conversion).
  void store_bf16(std::uint16_t* p) const {
#if defined(__AVX512BF16__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
#else
    alignas(64) float lanes[kLanes];
    store(lanes);
    for (int i = 0; i < kLanes; ++i) p[i] = float_to_bf16(lanes[i]);
#endif
  }
  friend Floats operator+(Floats a, Floats b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend Floats operator-(Floats a, Floats b) { return {_mm512_sub_ps(a.v, b.v)}; }
  friend Floats operator*(Floats a, Floats b) { return {_mm512_mul_ps(a.v, b.v)}; }
  friend Floats operator/(Floats a, Floats b) { return {_mm512_div_ps(a.v, b.v)}; }
  static Floats fma(Floats a, Floats b, Floats c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }   // a b + c
  static Floats fnma(Floats a, Floats b, Floats c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }  // c - a b
  static Floats min(Floats a, Floats b) { return {_mm512_min_ps(a.v, b.v)}; }
  static Floats max(Floats a, Floats b) { return {_mm512_max_ps(a.v, b.v)}; }
  Floats round() const { return {_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  // 2^n for whole numbers n in [-126, 127], built in the exponent bits.
  Floats pow2() const {
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(127)), 23))};
  }
  // `then` in the lanes where x is below `limit` (above it, for if_above), else `otherwise`.
  static Floats if_below(Floats x, float limit, Floats then, Floats otherwise) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, _mm512_set1_ps(limit), _CMP_LT_OQ), otherwise.v, then.v)};
  }
  static Floats if_above(Floats x, float limit, Floats then, Floats otherwise) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, _mm512_set1_ps(limit), _CMP_GT_OQ), otherwise.v, then.v)};
  }
  float sum() const { return _mm512_reduce_add_ps(v); }
  float largest() const { return _mm512_reduce_max_ps(v); }
#else
  static Floats all(float x) { return {_mm256_set1_ps(x)}; }
  static Floats load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static Floats load_bf16(const std::uint16_t* p) { return {widen_bf16_eight(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  void store_bf16(std::uint16_t* p) const {
    alignas(32) float lanes[kLanes];
    store(lanes);
    for (int i = 0; i < kLanes; ++i) p[i] = float_to_bf16(lanes[i]);
  }
  friend Floats operator+(Floats a, Floats b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend Floats operator-(Floats a, Floats b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend Floats operator*(Floats a, Floats b) { return {_mm256_mul_ps(a.v, b.v)}; }
  friend Floats operator/(Floats a, Floats b) { return {_mm256_div_ps(a.v, b.v)}; }
  static Floats fma(Floats a, Floats b, Floats c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static Floats fnma(Floats a, Floats b, Floats c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
  static Floats min(Floats a, Floats b) { return {_mm256_min_ps(a.v, b.v)}; }
  static Floats max(Floats a, Floats b) { return {_mm256_max_ps(a.v, b.v)}; }
  Floats round() const { return {_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  Floats pow2() const {
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127)), 23))};
  }
  static Floats if_below(Floats x, float limit, Floats then, Floats otherwise) {
    return {_mm256_blendv_ps(otherwise.v, then.v, _mm256_cmp_ps(x.v, _mm256_set1_ps(limit), _CMP_LT_OQ))};
  }
  static Floats if_above(Floats x, float limit, Floats then, Floats otherwise) {
    return {_mm256_blendv_ps(otherwise.v, then.v, _mm256_cmp_ps(x.v, _mm256_set1_ps(limit), _CMP_GT_OQ))};
  }
  float sum() const { return sum_lanes(v); }
  float largest() const { return largest_lane(v); }
#endif
};

// fast_exp on a vector of floats.
inline Floats fast_exp(Floats x) {
#if defined(__AVX512F__)
  // No clamp: lanes outside [-87, 88] (NaN included) are replaced by the masks below whatever the
  // polynomial made of them, and scalef takes any n; in range the result is the clamped one's.
  const Floats clamped = x;
#else
  const Floats clamped = Floats::min(Floats::max(x, Floats::all(-87.0f)), Floats::all(88.0f));
#endif
  const Floats n = (clamped * Floats::all(1.44269504088896341f)).round();
  Floats r = Floats::fnma(n, Floats::all(0.693359375f), clamped);
  r = Floats::fnma(n, Floats::all(-2.12194440e-4f), r);
  Floats p = Floats::all(1.9875691500e-4f);
  p = Floats::fma(p, r, Floats::all(1.3981999507e-3f));
  p = Floats::fma(p, r, Floats::all(8.3334519073e-3f));
  p = Floats::fma(p, r, Floats::all(4.1665795894e-2f));
  p = Floats::fma(p, r, Floats::all(1.6666665459e-1f));
  p = Floats::fma(p, r, Floats::all(5.0000001201e-1f));
  const Floats e = Floats::fma(p * r, r, r) + Floats::all(1.0f);
#if defined(__AVX512F__)
  // e 2^n in one instruction, with the lanes below the range zeroed by its mask: three fewer
  // operations than building 2^n in the exponent bits, a sixth of a softmax row's time.
  const __mmask16 in_range = _mm512_cmp_ps_mask(x.v, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  const __mmask16 above = _mm512_cmp_ps_mask(x.v, _mm512_set1_ps(88.0f), _CMP_GT_OQ);
  return {_mm512_mask_blend_ps(above, _mm512_maskz_scalef_ps(in_range, e.v, n.v), _mm512_set1_ps(__builtin_inff()))};
#else
  const Floats y = Floats::if_below(x, -87.0f, Floats::all(0.0f), e * n.pow2());
  return Floats::if_above(x, 88.0f, Floats::all(__builtin_inff()), y);
#endif
}
#endif

// The largest of x[0..n), -inf when n is 0; a NaN among them is passed over, as std::max(max, x[i])
// passes it over (GCC does not vectorise that loop: the order of a float max is not free to change).
inline float max_of(const float* x, std::int64_t n) {
  std::int64_t i = 0;
  float max = -__builtin_inff();
#if defined(LORACPP_VECTOR_FLOATS)
  Floats acc = Floats::all(max);
  for (; i + Floats::kLanes <= n; i += Floats::kLanes) acc = Floats::max(Floats::load(x + i), acc);  // a NaN lane keeps acc
#if defined(__AVX512F__)
  if (i < n) {  // the tail in one masked vector: a tile's rows end anywhere
    acc = Floats::max(Floats::load_first(x + i, static_cast<int>(n - i), max), acc);
    i = n;
  }
#endif
  max = acc.largest();
#endif
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  return max;
}

// out[i] = exp(x[i] - shift) * scale, and where out16 is given the same rounded to bf16 (as to_bf16
// below rounds); returns the sum of the out[i] (unrounded). Either output may be null.
inline float exp_shifted(const float* x, float shift, float scale, float* out, std::int64_t n,
                         std::uint16_t* out16 = nullptr) {
  std::int64_t i = 0;
  float sum = 0;
#if defined(LORACPP_VECTOR_FLOATS)
  Floats acc = Floats::all(0.0f);
  const Floats s = Floats::all(shift), k = Floats::all(scale);
  for (; i + Floats::kLanes <= n; i += Floats::kLanes) {
    const Floats y = fast_exp(Floats::load(x + i) - s) * k;
    if (out) y.store(out + i);
    if (out16) y.store_bf16(out16 + i);
    acc = acc + y;
  }
#if defined(__AVX512F__)
  if (i < n) {  // the tail in one masked vector, its other lanes exp(-inf) = 0
    const int tail = static_cast<int>(n - i);
    const Floats y = fast_exp(Floats::load_first(x + i, tail, -__builtin_inff()) - s) * k;
    if (out) y.store_first(out + i, tail);
    if (out16) y.store_bf16_first(out16 + i, tail);
    acc = acc + y;
    i = n;
  }
#endif
  sum = acc.sum();
#endif
  for (; i < n; ++i) {
    const float y = fast_exp(x[i] - shift) * scale;
    if (out) out[i] = y;
    if (out16) out16[i] = float_to_bf16(y);
    sum += y;
  }
  return sum;
}

// s[i] = 1 / (1 + exp(-x[i])), through the same exp.
inline void sigmoid_array(const float* x, float* s, std::int64_t n) {
  std::int64_t i = 0;
#if defined(LORACPP_VECTOR_FLOATS)
  const Floats one = Floats::all(1.0f);
  for (; i + Floats::kLanes <= n; i += Floats::kLanes)
    (one / (one + fast_exp(Floats::all(0.0f) - Floats::load(x + i)))).store(s + i);
#endif
  for (; i < n; ++i) s[i] = 1.0f / (1.0f + fast_exp(-x[i]));
}

// out[i] = x[i] * scale rounded to bf16 (to nearest, ties to even). Where the build targets
// AVX512-BF16, through its conversion (32 bytes out per instruction), which takes inputs below f32's
// normal range (under 1.2e-38) as zero; else through float_to_bf16, which GCC vectorises.
inline void to_bf16(const float* x, std::uint16_t* out, std::int64_t n, float scale = 1.0f) {
  std::int64_t i = 0;
#if defined(__AVX512BF16__)
  const __m512 k = _mm512_set1_ps(scale);
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(x + i), k))));
#endif
  for (; i < n; ++i) out[i] = float_to_bf16(x[i] * scale);
}

}  // namespace loracpp::backend::cpu

#pragma GCC diagnostic pop
