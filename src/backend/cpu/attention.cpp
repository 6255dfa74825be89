// Fused attention on the CPU, flash-style: scores exist only as one tile of query rows against
// the keys they may see, in a thread's own buffer; the forward pass keeps the log-sum-exp of
// each row, and the backward pass recomputes its tile of probabilities from it. Tiles are
// multiplied inside an OpenMP loop over heads, each on its own thread: in f32 as gemm's large
// products are (f32_library_gemm: oneDNN's sgemm on CPUs with AVX-512, where Debian's OpenBLAS
// runs AVX2 kernels, else OpenBLAS), or, when the geometry asks for bf16 products, in bf16 with
// f32 accumulation through oneDNN. Where the build has AVX512-BF16 and the heads' lengths are
// even, bf16 calls go instead to attention_pairs.cpp, whose own kernel multiplies operands packed
// once per head.
// Softmax, masking and the log-sum-exp stay f32 either way. Keys and values may also come in bf16
// (a KV cache on the bf16 path), read in place; f32 tiles widen them as they read them.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/attention_pairs.h"
#include "backend/cpu/attention_tiles.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/scratch.h"
#include "backend/cpu/vec_math.h"
#include "core/dtype.h"
#include "core/error.h"

namespace loracpp::backend::cpu {

namespace {

// Query rows per tile: 64 with f32 products (OpenBLAS's), 128 with bf16 ones. 128 halves the
// products (each a oneDNN call, whose dispatch took a tenth of the bf16 attention's time) for a
// little more work above the causal diagonal: the bf16 attention 5-15% faster on a Zen 5, where
// f32 training steps ran 2% slower with it.
i64 tile_rows(bool bf16) { return bf16 ? 128 : 64; }
// Query rows from which a call multiplies in bf16 (see bf16_products).
constexpr i64 kBf16Rows = 64;

// The f32 tiles are multiplied inside an OpenMP team, one library call per thread. OpenBLAS allowed
// threads of its own there splits each call into parts that wait on each other on one thread: 5
// instead of 110 GFLOP/s on the small preset's attention. So for the span of a fused attention
// call it gets one thread; its OpenMP build sets OpenMP's thread count along with its own, and
// the team's is put back at once.
class OneBlasThreadEach {
 public:
  OneBlasThreadEach() : blas_(openblas_get_num_threads()), team_(omp_get_max_threads()) {
    openblas_set_num_threads(1);
    omp_set_num_threads(team_);
  }
  ~OneBlasThreadEach() {
    openblas_set_num_threads(blas_);
    omp_set_num_threads(team_);
  }
  OneBlasThreadEach(const OneBlasThreadEach&) = delete;
  OneBlasThreadEach& operator=(const OneBlasThreadEach&) = delete;

 private:
  int blas_, team_;
};

#if defined(LORACPP_VECTOR_FLOATS)
#if defined(__AVX512F__)
// GCC 12 warns of its own AVX-512 headers' undefined pass-through operands (as vec_math.h).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// Lane r of the result: the sum of rows[r]'s lanes. With AVX-512, through a tree of unpacks and
// shuffles (about three operations a row).
inline Floats sums_across(const Floats (&rows)[16]) {
  // Pairs: per 128-bit chunk, [r0, r1, r0, r1] partial sums of rows 2i and 2i + 1.
  __m512 pairs[8];
  for (int i = 0; i < 8; ++i)
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(rows[2 * i].v, rows[2 * i + 1].v),
                             _mm512_unpackhi_ps(rows[2 * i].v, rows[2 * i + 1].v));
  // Quads: per 128-bit chunk, one partial sum of each of rows 4i .. 4i + 3.
  __m512 quads[4];
  for (int i = 0; i < 4; ++i)
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // The four chunks of each quad summed, chunk i of the result holding rows 4i .. 4i + 3.
  const __m512 q01 = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 q23 = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return {_mm512_add_ps(_mm512_shuffle_f32x4(q01, q23, _MM_SHUFFLE(2, 0, 2, 0)),
                        _mm512_shuffle_f32x4(q01, q23, _MM_SHUFFLE(3, 1, 3, 1)))};
}
#pragma GCC diagnostic pop
#else
// With AVX2, as a LoRA branch's short dot products are summed.
inline Floats sums_across(const Floats (&rows)[8]) {
  const __m256 raw[8] = {rows[0].v, rows[1].v, rows[2].v, rows[3].v, rows[4].v, rows[5].v, rows[6].v, rows[7].v};
  return {sums_of_eight(raw)};
}
#endif

// The dot products of a (k values, a multiple of Floats::kLanes) with as many bf16 rows of b, ldb
// apart, as one vector: each row's products accumulate in a vector of its own, summed across
// together at the end. A horizontal sum per row cost more than a 64-value head's products: a
// generated token's scores against a bf16 KV cache were 6% of a q4_0 token.
inline Floats dot_rows(const float* a, const std::uint16_t* b, i64 ldb, i64 k) {
  Floats acc[Floats::kLanes];
  for (Floats& v : acc) v = Floats::all(0.0f);
  for (i64 p = 0; p < k; p += Floats::kLanes) {
    const Floats av = Floats::load(a + p);
    for (int r = 0; r < Floats::kLanes; ++r) acc[r] = Floats::fma(av, Floats::load_bf16(b + r * ldb + p), acc[r]);
  }
  return sums_across(acc);
}

// c[0, NV vectors) = alpha (sum over p < k of a[p] b's row p) + beta c, b's bf16 rows widened as
// read: a generated token's probabilities times the values of a bf16 cache. c's vectors stay in
// registers across all k rows; loaded and stored once for each row of b, they cost as much as the
// multiply-adds.
template <int NV>
void add_scaled_rows(const float* a, float alpha, const std::uint16_t* b, i64 ldb, i64 k, float beta, float* c) {
  Floats acc[NV];
  for (int v = 0; v < NV; ++v)
    acc[v] = beta == 0.0f ? Floats::all(0.0f) : Floats::all(beta) * Floats::load(c + v * Floats::kLanes);
  for (i64 p = 0; p < k; ++p) {
    const float s = alpha * a[p];
    if (s == 0.0f) continue;  // a masked key
    const Floats scale = Floats::all(s);
    const std::uint16_t* bp = b + p * ldb;
    for (int v = 0; v < NV; ++v) acc[v] = Floats::fma(scale, Floats::load_bf16(bp + v * Floats::kLanes), acc[v]);
  }
  for (int v = 0; v < NV; ++v) acc[v].store(c + v * Floats::kLanes);
}

// add_scaled_rows over c's first `vectors` vectors (1 to 8).
void add_scaled_rows(i64 vectors, const float* a, float alpha, const std::uint16_t* b, i64 ldb, i64 k, float beta,
                     float* c) {
  switch (vectors) {
    case 1: return add_scaled_rows<1>(a, alpha, b, ldb, k, beta, c);
    case 2: return add_scaled_rows<2>(a, alpha, b, ldb, k, beta, c);
    case 3: return add_scaled_rows<3>(a, alpha, b, ldb, k, beta, c);
    case 4: return add_scaled_rows<4>(a, alpha, b, ldb, k, beta, c);
    case 5: return add_scaled_rows<5>(a, alpha, b, ldb, k, beta, c);
    case 6: return add_scaled_rows<6>(a, alpha, b, ldb, k, beta, c);
    case 7: return add_scaled_rows<7>(a, alpha, b, ldb, k, beta, c);
    default: return add_scaled_rows<8>(a, alpha, b, ldb, k, beta, c);
  }
}
#endif

// A tile operand: its f32 values, and its bf16 copy when the call multiplies in bf16. Keys and
// values held in bf16 (a KV cache) have no f32 values: f32 tiles widen them as they are read.
struct Operand {
  const float* f32;
  const std::uint16_t* bf16 = nullptr;
};

// c[m,n] = alpha op(a)[m,k] op(b)[k,n] + beta c for one thread's tile, in the call's precision. In
// bf16 the operands made per tile (the probabilities and their gradient) are rounded by the pass
// that makes them, row by row, into the thread's buffer (`rounding`); oneDNN reads them transposed
// where a product needs.
class TileProducts {
 public:
  // `rounded`: room for a tile's bf16 operand where the call multiplies in bf16, else null.
  explicit TileProducts(std::uint16_t* rounded) : bf16_(rounded != nullptr), rounded_(rounded) {}

  void operator()(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, Operand a, i64 lda, Operand b,
                  i64 ldb, float beta, float* c, i64 ldc) {
    if (bf16_) {
      gemm_bf16_serial(trans_a, trans_b, m, n, k, alpha, a.bf16, lda, b.bf16, ldb, beta, c, ldc);
      return;
    }
    if (b.f32 == nullptr) {
      widening_b(trans_a, trans_b, m, n, k, alpha, a.f32, lda, b.bf16, ldb, beta, c, ldc);
      return;
    }
    f32_library_gemm(trans_a, trans_b, m, n, k, alpha, a.f32, lda, b.f32, ldb, beta, c, ldc);
  }

  // Where a tile operand's bf16 values go (null in f32): the pass that makes the operand rounds
  // into it as it writes, each operand replacing the previous one, so each must be used before the
  // next is made.
  std::uint16_t* rounding() { return rounded_; }
  // The tile operand `values`, with its bf16 rounding in rounding() where the call multiplies in
  // bf16.
  Operand operand(const float* values) { return {values, rounding()}; }

 private:
  // c = alpha a op(b) + beta c with b's bf16 values widened as read: the few query rows of a
  // generated token against a bf16 cache, bound by reading it. a is never transposed here.
  static void widening_b(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,
                         const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc) {
    check(!trans_a, "attention", "a bf16 key or value operand is only ever the right-hand one");
    for (i64 i = 0; i < m; ++i) {
      const float* ai = a + i * lda;
      float* ci = c + i * ldc;
      if (trans_b) {  // dot products along b's rows (scores against keys)
        i64 j = 0;
#if defined(LORACPP_VECTOR_FLOATS)
        if (k % Floats::kLanes == 0)
          for (; j + Floats::kLanes <= n; j += Floats::kLanes) {
            Floats sums = Floats::all(alpha) * dot_rows(ai, b + j * ldb, ldb, k);
            if (beta != 0.0f) sums = Floats::fma(Floats::all(beta), Floats::load(ci + j), sums);
            sums.store(ci + j);
          }
#endif
        for (; j < n; ++j) {
          const std::uint16_t* bj = b + j * ldb;
          float sum = 0;
#pragma omp simd reduction(+ : sum)
          for (i64 p = 0; p < k; ++p) sum += ai[p] * bf16_to_float(bj[p]);
          ci[j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * ci[j]);
        }
      } else {  // b's rows scaled into c's row (probabilities times values)
        i64 j0 = 0;
#if defined(LORACPP_VECTOR_FLOATS)
        while (n - j0 >= Floats::kLanes) {  // up to eight vectors of c at a time
          const i64 vectors = std::min<i64>(8, (n - j0) / Floats::kLanes);
          add_scaled_rows(vectors, ai, alpha, b + j0, ldb, k, beta, ci + j0);
          j0 += vectors * Floats::kLanes;
        }
#endif
        if (j0 == n) continue;
        for (i64 j = j0; j < n; ++j) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        for (i64 p = 0; p < k; ++p) {
          const float s = alpha * ai[p];
          if (s == 0.0f) continue;
          const std::uint16_t* bp = b + p * ldb;
#pragma omp simd
          for (i64 j = j0; j < n; ++j) ci[j] += s * bf16_to_float(bp[j]);
        }
      }
    }
  }

  bool bf16_;
  std::uint16_t* rounded_;
};

// Each thread's buffers, kept from call to call (scratch.h): the bf16 copies of a call's q, k, v
// and output gradient, made by the calling thread, and a tile's scores, probabilities and their
// gradient, and its bf16 operand, used by each member of the team.
struct AttentionScratch {
  Scratch<std::uint16_t> q, k, v, dout, rounded;
  Scratch<float> scores, grads;
};
thread_local AttentionScratch scratch;

// Whether this call multiplies in bf16: asked for, native on this CPU (widened bf16 would only
// round the f32 operands it has), and with enough query rows to repay rounding all of k and v (a
// generated token's step multiplies in f32).
bool bf16_products(const AttentionGeometry& g) {
  return g.bf16_products && g.q_len >= kBf16Rows && bf16_products_native();
}

// A bf16 copy of n values, in `into`, when the call multiplies in bf16; null otherwise.
const std::uint16_t* bf16_copy(bool bf16, const float* x, i64 n, Scratch<std::uint16_t>& into) {
  if (!bf16) return nullptr;
  std::uint16_t* out = into.at_least(n);
  convert(x, DType::f32, out, DType::bf16, n);
  return out;
}

Operand operand(const float* f32, const std::uint16_t* copy, i64 offset) {
  return {f32 + offset, copy ? copy + offset : nullptr};
}

// The key or value heads, `stride` elements apart in f32 (a KV cache's slice is read in place),
// and when the call multiplies in bf16 a packed bf16 copy of them, in `copy`; or heads held in
// bf16, read in place either way.
class Heads {
 public:
  Heads(const std::uint16_t* x, i64 stride) : f32_(nullptr), stride_(stride), elements_(stride), view_(x) {}

  Heads(bool bf16, const float* x, i64 count, i64 stride, i64 elements, Scratch<std::uint16_t>& copy)
      : f32_(x), stride_(stride), elements_(elements) {
    if (!bf16) return;
    if (stride == elements) {
      bf16_ = bf16_copy(true, x, count * elements, copy);
      return;
    }
    std::uint16_t* packed = copy.at_least(count * elements);
    for (i64 h = 0; h < count; ++h) convert(x + h * stride, DType::f32, packed + h * elements, DType::bf16, elements);
    bf16_ = packed;
  }

  Operand operator[](i64 head) const {
    if (view_) return {nullptr, view_ + head * stride_};
    return {f32_ + head * stride_, bf16_ ? bf16_ + head * elements_ : nullptr};
  }

 private:
  const float* f32_;
  i64 stride_, elements_;
  const std::uint16_t* bf16_ = nullptr;
  const std::uint16_t* view_ = nullptr;
};

// scores [rows, visible] = scale * q_tile kᵀ + mask, -inf where causality hides a key.
void tile_scores(TileProducts& product, const AttentionGeometry& g, Operand q_tile, Operand k, const float* mask_plane,
                 i64 t0, i64 rows, i64 visible, float* scores) {
  product(false, true, rows, visible, g.head_dim, g.scale, q_tile, g.head_dim, k, g.head_dim, 0.0f, scores, visible);
  mask_scores(g, mask_plane, t0, rows, visible, scores);
}

}  // namespace

namespace {

void forward_tiles(bool bf16, const float* q, const Heads& keys, const Heads& values, const float* mask, float* out,
                   float* lse, const AttentionGeometry& g) {
  const OneBlasThreadEach blas_threads;
  const i64 heads = g.batch * g.kv_heads * g.group;
  const i64 tile_size = tile_rows(bf16), tiles = (g.q_len + tile_size - 1) / tile_size;
  const std::uint16_t* q16 = bf16_copy(bf16, q, heads * g.q_len * g.head_dim, scratch.q);
  // A tile's scores: a generated token's single query row needs one row of them, not a tile's.
  const i64 rows_at_most = std::min(tile_size, g.q_len);
  const i64 tile_elements = rows_at_most * std::max<i64>(g.kv_len, 1);
#pragma omp parallel
  {
    // Every tile writes these before it reads them.
    float* const scores = scratch.scores.at_least(tile_elements);
    TileProducts product(bf16 ? scratch.rounded.at_least(tile_elements) : nullptr);
    std::vector<float> row_scale(static_cast<std::size_t>(rows_at_most));  // 1/sum of each row's exponentials
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < heads * tiles; ++item) {
      const i64 head = item / tiles, tile = item % tiles;
      const i64 b = head / (g.kv_heads * g.group), kvh = head / g.group % g.kv_heads;
      const i64 t0 = tile * tile_size, rows = std::min(tile_size, g.q_len - t0);
      const i64 kv_item = b * g.kv_heads + kvh;
      const Operand kh = keys[kv_item], vh = values[kv_item];
      const Operand q_tile = operand(q, q16, (head * g.q_len + t0) * g.head_dim);
      float* o_tile = out + (head * g.q_len + t0) * g.v_dim;
      float* lse_tile = lse + head * g.q_len + t0;
      const i64 visible = visible_keys(g, t0 + rows);
      if (visible == 0) {  // nothing to attend to: zeros, as a softmax over nothing would be
        std::fill(o_tile, o_tile + rows * g.v_dim, 0.0f);
        std::fill(lse_tile, lse_tile + rows, -std::numeric_limits<float>::infinity());
        continue;
      }
      tile_scores(product, g, q_tile, kh, mask_plane(g, mask, b, head % (g.kv_heads * g.group)), t0, rows, visible,
                  scores);
      // Each row's exponentials against its largest score. In bf16 they go unnormalised straight
      // into the rounded operand, and the output's row (v_dim values, not `visible`) is scaled by
      // 1/sum after the product; in f32 the row is normalised in place.
      std::uint16_t* p16 = product.rounding();
      for (i64 r = 0; r < rows; ++r) {
        float* s = scores + r * visible;
        const float max = max_of(s, visible);
        if (max == -std::numeric_limits<float>::infinity()) {  // every key masked: no weight anywhere
          if (p16) std::fill(p16 + r * visible, p16 + (r + 1) * visible, std::uint16_t{0});
          std::fill(s, s + visible, 0.0f);
          row_scale[static_cast<std::size_t>(r)] = 0.0f;
          lse_tile[r] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float sum = p16 ? exp_shifted(s, max, 1.0f, nullptr, visible, p16 + r * visible)
                              : exp_shifted(s, max, 1.0f, s, visible);
        const float inv = 1.0f / sum;
        if (p16) {
          row_scale[static_cast<std::size_t>(r)] = inv;
        } else {
          for (i64 j = 0; j < visible; ++j) s[j] *= inv;
        }
        lse_tile[r] = max + std::log(sum);
      }
      product(false, false, rows, g.v_dim, visible, 1.0f, product.operand(scores), visible, vh, g.v_dim, 0.0f,
              o_tile, g.v_dim);
      if (p16)
        for (i64 r = 0; r < rows; ++r) {
          float* o = o_tile + r * g.v_dim;
          const float inv = row_scale[static_cast<std::size_t>(r)];
          for (i64 c = 0; c < g.v_dim; ++c) o[c] *= inv;
        }
    }
  }
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, const float* mask, float* out, float* lse,
                       const AttentionGeometry& g) {
  const bool bf16 = bf16_products(g);
  if (bf16 && attention_pairs_fit(g))
    return attention_forward_pairs(q, {k, nullptr, g.k_stride()}, {v, nullptr, g.v_stride()}, mask, out, lse, g);
  const Heads keys(bf16, k, g.batch * g.kv_heads, g.k_stride(), g.kv_len * g.head_dim, scratch.k);
  const Heads values(bf16, v, g.batch * g.kv_heads, g.v_stride(), g.kv_len * g.v_dim, scratch.v);
  forward_tiles(bf16, q, keys, values, mask, out, lse, g);
}

void attention_forward_bf16_kv(const float* q, const std::uint16_t* k, const std::uint16_t* v, const float* mask,
                               float* out, float* lse, const AttentionGeometry& g) {
  const bool bf16 = bf16_products(g);
  if (bf16 && attention_pairs_fit(g))
    return attention_forward_pairs(q, {nullptr, k, g.k_stride()}, {nullptr, v, g.v_stride()}, mask, out, lse, g);
  forward_tiles(bf16, q, Heads(k, g.k_stride()), Heads(v, g.v_stride()), mask, out, lse, g);
}

void attention_backward(const float* q, const float* k, const float* v, const float* mask, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttentionGeometry& g) {
  const bool bf16 = bf16_products(g);
  if (bf16 && attention_pairs_fit(g))
    return attention_backward_pairs(q, {k, nullptr, g.k_stride()}, {v, nullptr, g.v_stride()}, mask, out, lse, dout,
                                    dq, dk, dv, g);
  const OneBlasThreadEach blas_threads;
  const i64 tile_size = tile_rows(bf16);
  const i64 q_elements = g.batch * g.kv_heads * g.group * g.q_len;
  const std::uint16_t* q16 = bf16_copy(bf16, q, q_elements * g.head_dim, scratch.q);
  const Heads keys(bf16, k, g.batch * g.kv_heads, g.k_stride(), g.kv_len * g.head_dim, scratch.k);
  const Heads values(bf16, v, g.batch * g.kv_heads, g.v_stride(), g.kv_len * g.v_dim, scratch.v);
  const std::uint16_t* do16 = bf16_copy(bf16, dout, q_elements * g.v_dim, scratch.dout);
  // One item per key/value head, so its dk and dv have one writer.
#pragma omp parallel
  {
    // A tile's probabilities and their gradient: every tile writes these before it reads them.
    const i64 tile_elements = tile_size * std::max<i64>(g.kv_len, 1);
    float* const p = scratch.scores.at_least(tile_elements);
    float* const dp = scratch.grads.at_least(tile_elements);
    std::vector<float> delta(static_cast<std::size_t>(tile_size));
    TileProducts product(bf16 ? scratch.rounded.at_least(tile_elements) : nullptr);
#pragma omp for schedule(dynamic)
    for (i64 item = 0; item < g.batch * g.kv_heads; ++item) {
      const i64 b = item / g.kv_heads;
      const Operand kh = keys[item], vh = values[item];
      float* dkh = dk + item * g.kv_len * g.head_dim;
      float* dvh = dv + item * g.kv_len * g.v_dim;
      std::fill(dkh, dkh + g.kv_len * g.head_dim, 0.0f);
      std::fill(dvh, dvh + g.kv_len * g.v_dim, 0.0f);
      for (i64 member = 0; member < g.group; ++member) {
        const i64 head = item * g.group + member;  // index over [batch, kv_heads, group]
        for (i64 t0 = 0; t0 < g.q_len; t0 += tile_size) {
          const i64 rows = std::min(tile_size, g.q_len - t0);
          const Operand q_tile = operand(q, q16, (head * g.q_len + t0) * g.head_dim);
          const Operand do_tile = operand(dout, do16, (head * g.q_len + t0) * g.v_dim);
          const float* o_tile = out + (head * g.q_len + t0) * g.v_dim;
          const float* lse_tile = lse + head * g.q_len + t0;
          float* dq_tile = dq + (head * g.q_len + t0) * g.head_dim;
          const i64 visible = visible_keys(g, t0 + rows);
          if (visible == 0) {
            std::fill(dq_tile, dq_tile + rows * g.head_dim, 0.0f);
            continue;
          }
          tile_scores(product, g, q_tile, kh, mask_plane(g, mask, b, head % (g.kv_heads * g.group)), t0, rows, visible,
                      p);
          // p = exp(s - lse), rounded as it is written where the products are bf16; rows with
          // nothing visible stay 0.
          std::uint16_t* p16 = product.rounding();
          for (i64 r = 0; r < rows; ++r) {
            float* pr = p + r * visible;
            std::uint16_t* pr16 = p16 ? p16 + r * visible : nullptr;
            if (lse_tile[r] == -std::numeric_limits<float>::infinity()) {
              std::fill(pr, pr + visible, 0.0f);
              if (pr16) std::fill(pr16, pr16 + visible, std::uint16_t{0});
            } else {
              exp_shifted(pr, lse_tile[r], 1.0f, pr, visible, pr16);
            }
            float d = 0;  // delta_r = sum_c dout[r, c] * out[r, c]
            const float *dor = do_tile.f32 + r * g.v_dim, *or_ = o_tile + r * g.v_dim;
#pragma omp simd reduction(+ : d)
            for (i64 c = 0; c < g.v_dim; ++c) d += dor[c] * or_[c];
            delta[static_cast<std::size_t>(r)] = d;
          }
          // dv += pᵀ dout; dp = dout vᵀ; ds = p (dp - delta); dq = scale ds k; dk += scale dsᵀ q
          product(true, false, visible, g.v_dim, rows, 1.0f, product.operand(p), visible, do_tile, g.v_dim, 1.0f,
                  dvh, g.v_dim);
          product(false, true, rows, visible, g.v_dim, 1.0f, do_tile, g.v_dim, vh, g.v_dim, 0.0f, dp, visible);
          for (i64 r = 0; r < rows; ++r) {  // ds, into the rounded operand where the products are bf16
            float* pr = p + r * visible;
            const float* dpr = dp + r * visible;
            const float d = delta[static_cast<std::size_t>(r)];
            if (p16) {
              score_gradient_bf16(pr, dpr, d, p16 + r * visible, visible);
            } else {
              for (i64 j = 0; j < visible; ++j) pr[j] *= dpr[j] - d;
            }
          }
          const Operand ds = product.operand(p);
          product(false, false, rows, g.head_dim, visible, g.scale, ds, visible, kh, g.head_dim, 0.0f, dq_tile,
                  g.head_dim);
          product(true, false, visible, g.head_dim, rows, g.scale, ds, visible, q_tile, g.head_dim, 1.0f, dkh,
                  g.head_dim);
        }
      }
    }
  }
}

}  // namespace loracpp::backend::cpu
