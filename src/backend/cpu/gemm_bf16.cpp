// bf16 x bf16 -> f32 products for frozen bf16 weights. With oneDNN (Debian's libdnnl) they run on
// AVX512-BF16 where the CPU has it, about twice the f32 GEMM rate; a matmul primitive is built
// once per shape and kept. Products with at most 16 columns (a LoRA branch's x Aᵀ and g B) and
// those with at most 32 terms (its expansions t Bᵀ and u A) run through our own kernels there
// (gemm_bf16_narrow.h, gemm_bf16_short.h). Those with few rows, or enough columns for each
// thread, share their columns out between the threads, blocks through each thread's own
// primitives (see kWideColumnsEach), and those with very many terms and a small output share
// their terms out (terms_shared_out). gemm_bf16_low_rank takes a frozen product and its LoRA
// expansion together: over a small weight each thread adds the expansion into the rows it has just
// written. Where oneDNN has no bf16 product for this CPU (one without AVX-512, say) or the build
// has no oneDNN, the products are our packed kernel's (gemm_packed.h), which widens the operands
// to f32 as it packs them: the same values, since a product of two bf16 values is exact in f32.
#include <omp.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_bf16_narrow.h"
#include "backend/cpu/gemm_bf16_short.h"
#include "backend/cpu/gemm_packed.h"
#include "backend/cpu/scratch.h"
#include "core/dtype.h"

#if defined(LORACPP_HAVE_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace loracpp::backend::cpu {

namespace {

#if defined(LORACPP_HAVE_ONEDNN)
// oneDNN's form of c = alpha a b + beta c: alpha scales the output, beta a sum post-op.
dnnl::primitive_attr scaled_sum(float alpha, float beta) {
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops sum;
    sum.append_sum(beta);
    attr.set_post_ops(sum);
  }
  return attr;
}

struct OneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  using Key = std::tuple<bool, i64, i64, i64, i64, i64, i64, float, float>;
  std::map<Key, dnnl::matmul> primitives;

  dnnl::matmul& primitive(bool trans_b, i64 m, i64 n, i64 k, i64 lda, i64 ldb, i64 ldc, float alpha, float beta) {
    const Key key{trans_b, m, n, k, lda, ldb, ldc, alpha, beta};
    auto it = primitives.find(key);
    if (it != primitives.end()) return it->second;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc a({m, k}, dt::bf16, dnnl::memory::dims{lda, 1});
    const dnnl::memory::desc b({k, n}, dt::bf16, trans_b ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
    const dnnl::memory::desc c({m, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), scaled_sum(alpha, beta), engine);
    return primitives.emplace(key, dnnl::matmul(pd)).first->second;
  }
};

OneDnn& onednn() {
  static OneDnn instance;
  return instance;
}

// The same products for one thread of an OpenMP team: its own primitives and stream, so team
// members never wait on each other, and oneDNN runs the product on the calling thread alone. Each
// shape keeps its memory objects too; a call only points them at its operands. The thread's
// products share one scratch buffer (where oneDNN packs blocks of the operands), grown to the
// largest they ask for, so that a call allocates nothing.
struct SerialOneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  struct Product {
    dnnl::matmul matmul;
    dnnl::memory a, b, c, scratch;
  };
  using Key = std::tuple<bool, bool, i64, i64, i64, i64, i64, i64, float, float>;
  std::map<Key, Product> products;
  Scratch<std::byte> scratch;
};
#endif

// Rows of c up to which oneDNN gives a product one block of rows, and so one thread: an adapter's
// weight gradients (r rows, a step's tokens as terms) ran at one thread's rate while the others
// waited. Such products share out their columns instead (a generated token's layers, fewer rows
// against a weight's rows, take the in-place dot products before this).
constexpr i64 kFewRows = 32;
// Columns per thread below which sharing them out costs more than it saves.
constexpr i64 kColumnsEach = 64;
// Columns per thread from which a product shares out its columns between the threads, in blocks
// each multiplied through the thread's own primitives, rather than being handed to oneDNN's
// threads. oneDNN 2.6 splits a training step's products (1024 rows, 288 to 49152 columns) by rows
// there, and every thread packs all of b: on a Zen 5, two threads reached a median 536-675
// GFLOP/s that way and 653-735 with the columns shared out (the output layer's [512, 288] x
// [288, 32000] 536 -> 721). With fewer columns each (96: SmolLM's k and v) oneDNN's way stayed
// ahead, and with more terms than kMostTerms (the output layer's input gradient, whose 32000 terms
// every block would read again) as well.
constexpr i64 kWideColumnsEach = 128;
constexpr i64 kMostTerms = 4096;
// A block's size: at most kMostColumns columns and, past 256, kMostBlock of b's values. One
// thread's single call over 16000 of the output layer's columns ran at a third of its rate in most
// runs, calls of 1000 columns at full rate; 2048³ ran best in blocks of 256 columns.
constexpr i64 kMostColumns = 1024;
constexpr i64 kMostBlock = i64{1} << 19;

// A frozen product with a LoRA expansion (gemm_bf16_low_rank) shares out its rows when each thread
// gets at least kFusedRowsEach of them and the weight has at most kFusedWeight values: every
// thread then packs all of the weight, and a small one costs little to pack twice. Its expansion,
// added by each thread into the rows it has just written, ran 40-75 us faster at [1024, 288] x
// [288, 288] than as a second pass over c (the frozen product shares out its columns, the pass its
// rows, so half of c moves between the cores); at [1024, 576] x [576, 1536] the frozen product's
// split by rows lost more than that.
constexpr i64 kFusedRowsEach = 64;
constexpr i64 kFusedWeight = i64{384} << 10;

#if defined(LORACPP_HAVE_ONEDNN)
// c = alpha a op(b) + beta c with blocks of c's columns (multiples of 16) shared out between the
// threads, each multiplied through the thread's own primitives: for few rows of c (a block per
// thread), or enough columns for each thread and not too many terms. False, with c untouched,
// where the product is neither or there are no threads to share it with.
bool columns_shared_out(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                        const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  const bool few_rows = m <= kFewRows;
  if (!few_rows && k > kMostTerms) return false;
  const i64 threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const i64 team = std::min(threads, n / (few_rows ? kColumnsEach : kWideColumnsEach));
  if (team < 2) return false;
  const i64 most = std::clamp<i64>(kMostBlock / std::max<i64>(k, 1), 256, kMostColumns);
  const i64 rounds = few_rows ? 1 : (n + team * most - 1) / (team * most), parts = team * rounds;
  const i64 block = (n + parts * 16 - 1) / (parts * 16) * 16;
#pragma omp parallel for num_threads(static_cast<int>(team)) schedule(dynamic)
  for (i64 part = 0; part < parts; ++part) {
    const i64 j0 = part * block, columns = std::min(block, n - j0);
    if (columns <= 0) continue;
    gemm_bf16_serial(false, trans_b, m, columns, k, alpha, a, lda, trans_b ? b + j0 * ldb : b + j0, ldb, beta, c + j0,
                     ldc);
  }
  return true;
}

// Outputs (m x n) up to which a product with more than kMostTerms terms shares its terms out
// instead: each thread's partial product is held whole until they are summed.
constexpr i64 kMostSummedOutputs = i64{1} << 20;

// c = alpha a op(b) + beta c for a product with more than kMostTerms terms and a small output (the
// output layer's input gradient: 32000 terms into [512, 288]): the terms are shared out in equal
// spans (multiples of 32), each span's product of a's columns and b's rows goes into an output of
// its own, a step of terms at a time, and the partial outputs are summed into c. Each thread packs
// only its span of b, where oneDNN's threads each packed all of it. The spans are a loop's items,
// so a team given fewer threads than asked still computes every one. False, with c untouched,
// where the product is not such a one or there are no threads to share it with.
bool terms_shared_out(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                      const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  const i64 team = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (k <= kMostTerms || m <= kFewRows || team < 2 || m * n * team > kMostSummedOutputs) return false;
  const i64 span = (k + team * 32 - 1) / (team * 32) * 32;
  // A thread's span in steps of at most kMostBlock of b's values (see kMostBlock), multiples of 32.
  const i64 step = std::max<i64>(256, kMostBlock / std::max<i64>(n, 1) / 32 * 32);
  const auto partial = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(team * m * n));
#pragma omp parallel num_threads(static_cast<int>(team))
  {
#pragma omp for schedule(static, 1)
    for (i64 part = 0; part < team; ++part) {
      const i64 p0 = std::min(k, part * span), p1 = std::min(k, p0 + span);
      float* out = partial.get() + part * m * n;
      if (p1 == p0) std::fill(out, out + m * n, 0.0f);
      for (i64 q0 = p0; q0 < p1; q0 += step)  // the span in steps, each added into the partial output
        gemm_bf16_serial(false, trans_b, m, n, std::min(step, p1 - q0), alpha, a + q0, lda,
                         trans_b ? b + q0 : b + q0 * ldb, ldb, q0 == p0 ? 0.0f : 1.0f, out, n);
    }  // the loop's end waits for every span
#pragma omp for
    for (i64 i = 0; i < m; ++i) {
      float* ci = c + i * ldc;
      for (i64 j = 0; j < n; ++j) {
        float sum = beta == 0.0f ? 0.0f : beta * ci[j];
        for (i64 q = 0; q < team; ++q) sum += partial[static_cast<std::size_t>((q * m + i) * n + j)];
        ci[j] = sum;
      }
    }
  }
  return true;
}
#endif

// Rows of c up to which a product reads b's bf16 values in place (a generated token's layers):
// packing all of b would cost more than multiplying by it.
constexpr i64 kInPlaceRows = 8;

// c = alpha a op(b) + beta c for a few rows of a, b's values widened as they are read; threads
// share out the columns of c.
void product_reading_bf16(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                          const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  std::vector<float> af(static_cast<std::size_t>(m * k));
  for (i64 i = 0; i < m; ++i) convert(a + i * lda, DType::bf16, af.data() + i * k, DType::f32, k);
  constexpr i64 kColumns = 64;  // columns of c per piece of work
#pragma omp parallel for if (n * k > (i64{1} << 16))
  for (i64 j0 = 0; j0 < n; j0 += kColumns) {
    const i64 j1 = std::min(n, j0 + kColumns);
    for (i64 i = 0; i < m; ++i) {
      const float* ai = af.data() + i * k;
      float* ci = c + i * ldc;
      if (trans_b) {  // dot products along b's rows
        for (i64 j = j0; j < j1; ++j) {
          const std::uint16_t* bj = b + j * ldb;
          float sum = 0;
#pragma omp simd reduction(+ : sum)
          for (i64 p = 0; p < k; ++p) sum += ai[p] * bf16_to_float(bj[p]);
          ci[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * ci[j]);
        }
      } else {  // scaled rows of b added along c's row
        for (i64 j = j0; j < j1; ++j) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (i64 p = 0; p < k; ++p) {
          const float s = alpha * ai[p];
          const std::uint16_t* bp = b + p * ldb;
#pragma omp simd
          for (i64 j = j0; j < j1; ++j) ci[j] += s * bf16_to_float(bp[j]);
        }
      }
    }
  }
}

}  // namespace

bool bf16_products_native() {
#if defined(LORACPP_HAVE_ONEDNN)
  // oneDNN declines to build a bf16 matmul for a CPU it cannot run one on; ask once.
  static const bool native = [] {
    try {
      using dt = dnnl::memory::data_type;
      const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
      const dnnl::memory::desc a({64, 64}, dt::bf16, dnnl::memory::format_tag::ab);
      const dnnl::memory::desc c({64, 64}, dt::f32, dnnl::memory::format_tag::ab);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, c), engine);
      (void)pd;
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return native;
#else
  return false;
#endif
}

void gemm_bf16(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda, const std::uint16_t* b,
               i64 ldb, float beta, float* c, i64 ldc) {
  count_gemm(m, n, k);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // no terms: c = beta c
    for (i64 i = 0; i < m; ++i)
      for (i64 j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
#if defined(LORACPP_HAVE_ONEDNN)
  if (bf16_products_native()) {
    if (gemm_bf16_narrow(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
    if (gemm_bf16_short(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
    // A generated token's layers (a few rows against a weight's rows, each read once) are bound by
    // reading the weight: dot products along its rows, in place, run at the memory's rate, a
    // quarter ahead of oneDNN's blocks. Against b's columns (an adapter's weight gradients at rank
    // 8) oneDNN stays ahead.
    if (trans_b && m <= kInPlaceRows)
      return product_reading_bf16(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (columns_shared_out(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
    if (terms_shared_out(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
    auto& dnn = onednn();
    std::lock_guard lock(dnn.mutex);
    auto& matmul = dnn.primitive(trans_b, m, n, k, lda, ldb, ldc, alpha, beta);
    using dt = dnnl::memory::data_type;
    const dnnl::memory a_mem({{m, k}, dt::bf16, dnnl::memory::dims{lda, 1}}, dnn.engine,
                             const_cast<std::uint16_t*>(a));
    const dnnl::memory b_mem({{k, n}, dt::bf16, trans_b ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1}},
                             dnn.engine, const_cast<std::uint16_t*>(b));
    const dnnl::memory c_mem({{m, n}, dt::f32, dnnl::memory::dims{ldc, 1}}, dnn.engine, c);
    matmul.execute(dnn.stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    dnn.stream.wait();
    return;
  }
#endif
  gemm_bf16_widened(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_bf16_low_rank(bool trans_b, i64 m, i64 n, i64 k, i64 r, const std::uint16_t* a, i64 lda,
                        const std::uint16_t* b, i64 ldb, float scale, const std::uint16_t* t, i64 ldt,
                        const std::uint16_t* l, i64 ldl, float* c, i64 ldc) {
#if defined(LORACPP_HAVE_ONEDNN)
  // Rows of c shared out: each thread multiplies its rows by all of the (small) frozen weight, then
  // adds the expansion into them while they are still in its cache.
  const i64 threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const i64 team = std::min(threads, m / kFusedRowsEach);
  if (bf16_products_native() && n > 0 && k > 0 && r > 0 && r <= kShortInner && team >= 2 && n * k <= kFusedWeight) {
    count_gemm(m, n, k);
    count_gemm(m, n, r);
    const i64 rows = (m + team * 16 - 1) / (team * 16) * 16;
#pragma omp parallel for num_threads(static_cast<int>(team)) schedule(static, 1)
    for (i64 part = 0; part < team; ++part) {
      const i64 i0 = std::min(m, part * rows), count = std::min(rows, m - i0);
      if (count <= 0) continue;
      gemm_bf16_serial(false, trans_b, count, n, k, 1.0f, a + i0 * lda, lda, b, ldb, 0.0f, c + i0 * ldc, ldc);
      if (!gemm_bf16_short_serial(trans_b, count, n, r, scale, t + i0 * ldt, ldt, l, ldl, 1.0f, c + i0 * ldc, ldc))
        gemm_bf16_serial(false, trans_b, count, n, r, scale, t + i0 * ldt, ldt, l, ldl, 1.0f, c + i0 * ldc, ldc);
    }
    return;
  }
#endif
  gemm_bf16(trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  gemm_bf16(trans_b, m, n, r, scale, t, ldt, l, ldl, 1.0f, c, ldc);
}

void gemm_bf16_widened(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,
                       const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  if (m == 0 || n == 0) return;
  if (m <= kInPlaceRows) return product_reading_bf16(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (k <= kShortInner) {  // a rank-k update: its operands widened (small), then our f32 kernel for it
    std::vector<float> af(static_cast<std::size_t>(m * k)), bf(static_cast<std::size_t>(n * k));
    for (i64 i = 0; i < m; ++i) convert(a + i * lda, DType::bf16, af.data() + i * k, DType::f32, k);
    const i64 rows = trans_b ? n : k, cols = trans_b ? k : n;
    for (i64 i = 0; i < rows; ++i) convert(b + i * ldb, DType::bf16, bf.data() + i * cols, DType::f32, cols);
    return gemm(false, trans_b, m, n, k, alpha, af.data(), k, bf.data(), cols, beta, c, ldc);
  }
  packed_gemm(m, n, k, alpha, {a, DType::bf16, lda, false}, {b, DType::bf16, ldb, trans_b}, beta, c, ldc, true);
}

void gemm_bf16_serial(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a,
                      i64 lda, const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
  if (m == 0 || n == 0) return;
  if (!bf16_products_native()) {
    packed_gemm(m, n, k, alpha, {a, DType::bf16, lda, trans_a}, {b, DType::bf16, ldb, trans_b}, beta, c, ldc, false);
    return;
  }
#if defined(LORACPP_HAVE_ONEDNN)
  thread_local SerialOneDnn dnn;
  const SerialOneDnn::Key key{trans_a, trans_b, m, n, k, lda, ldb, ldc, alpha, beta};
  auto it = dnn.products.find(key);
  if (it == dnn.products.end()) {
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc a_desc({m, k}, dt::bf16, trans_a ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
    const dnnl::memory::desc b_desc({k, n}, dt::bf16, trans_b ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
    const dnnl::memory::desc c_desc({m, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    dnnl::primitive_attr attr = scaled_sum(alpha, beta);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_desc, b_desc, c_desc), attr, dnn.engine);
    SerialOneDnn::Product product{dnnl::matmul(pd), dnnl::memory(a_desc, dnn.engine, DNNL_MEMORY_NONE),
                                  dnnl::memory(b_desc, dnn.engine, DNNL_MEMORY_NONE),
                                  dnnl::memory(c_desc, dnn.engine, DNNL_MEMORY_NONE),
                                  dnnl::memory(pd.scratchpad_desc(), dnn.engine, DNNL_MEMORY_NONE)};
    it = dnn.products.emplace(key, std::move(product)).first;
  }
  auto& product = it->second;
  product.a.set_data_handle(const_cast<std::uint16_t*>(a));
  product.b.set_data_handle(const_cast<std::uint16_t*>(b));
  product.c.set_data_handle(c);
  product.scratch.set_data_handle(dnn.scratch.at_least(static_cast<i64>(product.scratch.get_desc().get_size())));
  product.matmul.execute(dnn.stream, {{DNNL_ARG_SRC, product.a},
                                      {DNNL_ARG_WEIGHTS, product.b},
                                      {DNNL_ARG_DST, product.c},
                                      {DNNL_ARG_SCRATCHPAD, product.scratch}});
  dnn.stream.wait();
#endif
}

}  // namespace loracpp::backend::cpu
