// A few rows (generated tokens) through a LoRA projection in one parallel pass without a barrier:
// each thread takes t = x Aᵀ whole, then its share of the output columns, reading its share of W's
// rows and of B's rows once. Separately, the adapter's two small products ran on the calling
// thread while the other waited, and read A and B at one thread's rate: an unmerged r=16 adapter on
// every layer cost 8-12% of a small bf16 generated token against the merged weights, 7-9% so. One
// row over q8_0 or q4_0 weights quantised to 8 bits (a generated token's usual case) takes a path
// of its own, one_row_q8: t shared out between the threads, each output's adapter term added to its
// dot product without a product of its own.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <type_traits>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/block_dot.h"
#include "backend/cpu/vec_math.h"
#include "core/dtype.h"

namespace loracpp::backend::cpu {

namespace {

float dot(const float* x, const float* y, i64 n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (i64 p = 0; p < n; ++p) sum += x[p] * y[p];
  return sum;
}

float dot(const float* x, const std::uint16_t* y, i64 n) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (i64 p = 0; p < n; ++p) sum += x[p] * bf16_to_float(y[p]);
  return sum;
}

#if defined(LORACPP_VECTOR_FLOATS)
// out[q] = x · a's row q for G rows of a, `in` apart: G chains of multiply-adds overlap.
template <int G>
void dot_rows_of(const float* x, const float* a, i64 in, float* out) {
  constexpr i64 kLanes = Floats::kLanes;
  Floats acc[G];
  for (Floats& v : acc) v = Floats::all(0.0f);
  i64 p = 0;
  for (; p + kLanes <= in; p += kLanes) {
    const Floats xv = Floats::load(x + p);
    for (int q = 0; q < G; ++q) acc[q] = Floats::fma(xv, Floats::load(a + q * in + p), acc[q]);
  }
  for (int q = 0; q < G; ++q) {
    float sum = acc[q].sum();
    for (i64 tail = p; tail < in; ++tail) sum += x[tail] * a[q * in + tail];
    out[q] = sum;
  }
}
#endif

// out[k] = x · a's row k for k < r (t = x Aᵀ for one row of x), eight rows of a at a time: one
// row's dot product alone is one chain of multiply-adds, each waiting on the last. On an AVX2 Zen 4,
// t of r = 16 rows of 768 values cost 3-4 us of a 65 us q8_0 projection ([768, 2048]) that way, 1-2
// this way.
void dot_rows_of(const float* x, const float* a, i64 r, i64 in, float* out) {
  i64 k = 0;
#if defined(LORACPP_VECTOR_FLOATS)
  for (; k + 8 <= r; k += 8) dot_rows_of<8>(x, a + k * in, in, out + k);
  for (; k + 4 <= r; k += 4) dot_rows_of<4>(x, a + k * in, in, out + k);
#endif
  for (; k < r; ++k) out[k] = dot(x, a + k * in, in);
}

#if defined(LORACPP_Q8_ROWS)
// The lanes of scaled_t · b_row over r values (scaled_t padded with zeros to whole vectors of 8):
// where a row's dot product with the adapter's B starts, in the block kernel's accumulator.
inline __m256 adapter_term(const float* scaled_t, const float* b_row, i64 r) {
  __m256 sum = _mm256_setzero_ps();
  i64 k = 0;
  for (; k + 8 <= r; k += 8) sum = _mm256_fmadd_ps(_mm256_loadu_ps(scaled_t + k), _mm256_loadu_ps(b_row + k), sum);
  if (k < r) {
    const __m256i first = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r - k)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    sum = _mm256_fmadd_ps(_mm256_loadu_ps(scaled_t + k), _mm256_maskload_ps(b_row + k, first), sum);
  }
  return sum;
}

// One generated token through an unmerged projection over q8_0 or q4_0 weights, the row quantised
// to 8 bits, each thread streaming its share of W's rows and of B's once. t needs A first: each
// thread takes its share of t's values, fetching those rows of A while the first of its W rows
// stream (at W's byte rate), and waits for the others' shares (long done by then) before it adds
// the adapter's terms, scale t · B's row, each a few multiply-adds and one horizontal sum.
// Over q4_0, whose products leave the memory's rate to spare, a row's term starts the block
// kernel's accumulator, ahead of the horizontal sum it takes anyway, B's rows read in step with
// W's. Over q8_0, whose stream runs at the memory's rate, B's rows read that way cost far more than
// their bytes (a small token's unmerged cost 15-17% against 7-10% with B read after the stream).
template <class Format>
void one_row_q8(const float* x, const std::uint8_t* w, const float* a, const float* b, i64 in, i64 out, i64 r,
                float scale, float* t, float* y) {
  constexpr bool kBInStream = std::is_same_v<Format, Q4_0Format>;
  const std::size_t stride = static_cast<std::size_t>(in / Format::kBlock) * Format::kBlockBytes;
  const i64 lines_per_row = static_cast<i64>((stride + 63) / 64);  // A's lines fetched with each of W's rows
  constexpr i64 kLag = 8;  // W's rows between the last of A's fetches and t
  std::vector<float> scaled_t(static_cast<std::size_t>((r + 7) / 8 * 8), 0.0f);
  std::atomic<int> arrived{0};
#pragma omp parallel
  {
    const int threads = omp_get_num_threads(), thread = omp_get_thread_num();
    const i64 share = (out + threads - 1) / threads, t_share = (r + threads - 1) / threads;
    const i64 j0 = std::min(out, thread * share), j1 = std::min(out, j0 + share);
    const i64 k0 = std::min(r, thread * t_share), k1 = std::min(r, k0 + t_share);
    Q8Rows quantized;
    quantize_q8_rows<Format>(x, in, 1, in, quantized);
    const auto row_of = [&](i64 j) { return w + static_cast<std::size_t>(j) * stride; };
    const auto* a_line = reinterpret_cast<const char*>(a + k0 * in);
    const auto* a_end = reinterpret_cast<const char*>(a + k1 * in);
    const i64 a_rows = ((a_end - a_line) / 64 + 1 + lines_per_row - 1) / lines_per_row;
    const i64 first_end = std::min(j1, j0 + a_rows + kLag);
    for (i64 j = j0; j < first_end; ++j) {
      for (i64 l = 0; l < lines_per_row && a_line < a_end; ++l, a_line += 64) __builtin_prefetch(a_line);
      y[j] = dot_block_row_q8<Format>(quantized, row_of(j), _mm256_setzero_ps());
    }
    dot_rows_of(x, a + k0 * in, k1 - k0, in, t + k0);
    for (i64 k = k0; k < k1; ++k) scaled_t[static_cast<std::size_t>(k)] = scale * t[k];
    arrived.fetch_add(1, std::memory_order_release);
    const auto wait_for_t = [&] {
      for (int spins = 0; arrived.load(std::memory_order_acquire) < threads; ++spins) {
        _mm_pause();
        if (spins > 4096) std::this_thread::yield();
      }
    };
    if constexpr (kBInStream) {
      wait_for_t();
      constexpr i64 kAhead = 8;  // B's rows fetched ahead of their use
      for (i64 j = first_end; j < j1; ++j) {
        __builtin_prefetch(b + std::min(j + kAhead, j1 - 1) * r);
        y[j] = dot_block_row_q8<Format>(quantized, row_of(j), adapter_term(scaled_t.data(), b + j * r, r));
      }
    } else {
      for (i64 j = first_end; j < j1; ++j) y[j] = dot_block_row_q8<Format>(quantized, row_of(j), _mm256_setzero_ps());
      wait_for_t();
    }
    // The rows that streamed before t was whole (over q8_0, all of them) take their terms now.
    for (i64 j = j0, end = kBInStream ? first_end : j1; j < end; ++j)
      y[j] += sum_lanes(adapter_term(scaled_t.data(), b + j * r, r));
  }
}
#endif

}  // namespace

void lora_rows(const float* x, const void* w, DType w_dtype, [[maybe_unused]] BlockProducts products, const float* a,
               const float* b, i64 rows, i64 in, i64 out, i64 r, float scale, float* t, float* y) {
  count_gemm(rows, r, in);
  count_gemm(rows, out, in);  // the expansion's product counts itself
  const bool bf16 = w_dtype == DType::bf16;
  // The frozen product multiplies x as the bf16 path rounds it (as_bf16), in f32 from there.
  std::vector<float> rounded(bf16 ? static_cast<std::size_t>(rows * in) : 0);
  for (std::size_t i = 0; i < rounded.size(); ++i) rounded[i] = bf16_to_float(float_to_bf16(x[i]));
  const float* xw = bf16 ? rounded.data() : x;
#if defined(LORACPP_Q8_ROWS)
  if (rows == 1 && products.q8_rows && is_block_dtype(w_dtype)) {
    with_block_format(w_dtype, [&](auto format) {
      one_row_q8<decltype(format)>(x, static_cast<const std::uint8_t*>(w), a, b, in, out, r, scale, t, y);
    });
    return;
  }
#endif
#pragma omp parallel
  {
    // Contiguous shares of W's and B's rows, each streamed once: the frozen dot products, then
    // t = x Aᵀ, then the share's expansion by our few-term kernel (eight of B's rows at a time; one
    // horizontal sum per element of y would cost more than its 16 terms). A's and B's lines are
    // fetched ahead while W's share streams, a few with each of its rows: read in phases of their
    // own before and after the stream, an r=16 q8_0 projection of small took 50 us against the
    // frozen product's 31-35; fetched ahead, 42-46 us. On an AVX2 machine the rest of the gap is
    // all in t and the expansion: leaving both out closes it (the expansion alone from cache: 1 us
    // of its 3-4 here; why, not found).
    const i64 threads = omp_get_num_threads(), share = (out + threads - 1) / threads;
    const i64 j0 = std::min(out, omp_get_thread_num() * share), j1 = std::min(out, j0 + share);
    const i64 share_rows = std::max<i64>(j1 - j0, 1), a_lines = (r * in + 15) / 16;  // 16 floats a line
    const i64 a_lines_per_row = (a_lines + share_rows - 1) / share_rows;
    const auto fetch_ahead = [&](i64 j) {
      for (i64 line = (j - j0) * a_lines_per_row, end = std::min(a_lines, line + a_lines_per_row); line < end; ++line)
        __builtin_prefetch(a + line * 16);
      for (i64 k = 0; k < r; k += 16) __builtin_prefetch(b + j * r + k);
    };
    if (is_block_dtype(w_dtype)) {
      const auto* blocks = static_cast<const std::uint8_t*>(w);
      const std::size_t stride = dtype_bytes(w_dtype, in);
      with_block_format(w_dtype, [&](auto format) {
        using Format = decltype(format);
        float sums[8];
        for (i64 r0 = 0; r0 < rows; r0 += 8) {  // the dot products take 8 rows at most
          const i64 count = std::min<i64>(8, rows - r0);
#if defined(LORACPP_Q8_ROWS)
          // Each thread quantises the rows for itself (a few runs of 32), without a barrier.
          Q8Rows quantized;
          if (products.q8_rows) quantize_q8_rows<Format>(x + r0 * in, in, count, in, quantized);
#endif
          for (i64 j = j0; j < j1; ++j) {
            if (r0 == 0) fetch_ahead(j);
            const std::uint8_t* row = blocks + static_cast<std::size_t>(j) * stride;
#if defined(LORACPP_Q8_ROWS)
            if (products.q8_rows)
              dot_block_rows_q8<Format>(quantized, row, sums);
            else
#endif
              dot_block_rows<Format>(x + r0 * in, in, count, row, in, sums);
            for (i64 row_i = 0; row_i < count; ++row_i) y[(r0 + row_i) * out + j] = sums[row_i];
          }
        }
      });
    } else {
      for (i64 j = j0; j < j1; ++j) {
        fetch_ahead(j);
        for (i64 row = 0; row < rows; ++row)
          y[row * out + j] = bf16 ? dot(xw + row * in, static_cast<const std::uint16_t*>(w) + j * in, in)
                                  : dot(xw + row * in, static_cast<const float*>(w) + j * in, in);
      }
    }
    // Each thread takes t = x Aᵀ whole: A's r rows are a few percent of the bytes W's share reads,
    // and sharing them out needed a barrier before the expansion, a sleep and a wake-up per
    // projection where threads wait passively.
    std::vector<float> own(static_cast<std::size_t>(rows * r));
    for (i64 row = 0; row < rows; ++row) dot_rows_of(x + row * in, a, r, in, own.data() + row * r);
    if (omp_get_thread_num() == 0) std::copy(own.begin(), own.end(), t);
    if (j1 > j0) gemm(false, true, rows, j1 - j0, r, scale, own.data(), r, b + j0 * r, r, 1.0f, y + j0, out);
  }
}

}  // namespace loracpp::backend::cpu
