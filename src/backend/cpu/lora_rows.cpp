// A few rows (generated tokens) through a LoRA projection in one parallel pass without a barrier:
// each thread takes t = x Aᵀ whole, then its share of the output columns, reading its share of W's
// rows and of B's rows once. Separately, the adapter's two small products ran on the calling
// thread while the other waited, and read A and B at one thread's rate: an unmerged r=16 adapter on
// every layer cost 8-12% of a small bf16 generated token against the merged weights, 7-9% so.
#include <omp.h>

#include <algorithm>
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
