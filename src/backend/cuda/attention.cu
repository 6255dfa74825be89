// Fused attention on tensor cores (bf16 products, f32 accumulation and softmax), flash-style: the
// scores live in shared memory a 64×64 tile at a time and are never written out. The forward pass
// keeps a running max and sum per query row and saves the log-sum-exp; the backward pass recomputes
// each tile's probabilities from it. Same contract as the CPU kernels (backend/kernels.h): q
// [batch, kv_heads * group, q_len, d], k and v [batch, kv_heads, kv_len, d], causal masking aligned
// to the last query, an optional additive mask, rows that see no key give zeros and lse = -inf.
// Head sizes 32 and 64 (v_dim equal to head_dim); ops route other shapes to the composed path.
#include <cuda_bf16.h>
#include <mma.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.cuh"
#include "backend/kernels.h"
#include "core/error.h"

namespace loracpp::backend::cuda {

namespace {

using i64 = std::int64_t;
using bf16 = __nv_bfloat16;
using namespace nvcuda;

constexpr int kRows = 64;       // query rows and keys per tile
constexpr int kWarps = 4;       // each owns 16 rows (or 16 keys) of a tile
constexpr int kBlock = 32 * kWarps;
constexpr int kPadHalf = 8;     // row padding of bf16 tiles (wmma wants multiples of 8 elements)
constexpr int kPadFloat = 4;    // and of f32 tiles (multiples of 4)

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// rows × d f32 values from global memory (row stride d) into a bf16 tile; rows past `valid` are 0.
template <int D>
__device__ void load_tile(const float* src, i64 valid, bf16* dst) {
  constexpr int ld = D + kPadHalf;
  for (int idx = threadIdx.x; idx < kRows * D; idx += kBlock) {
    const int r = idx / D, c = idx % D;
    dst[r * ld + c] = __float2bfloat16_rn(r < valid ? src[static_cast<i64>(r) * D + c] : 0.0f);
  }
}

// out[16 × N] (f32, row stride ldo) = a[16 × K] (row-major) · b, where b is [K × N] row-major, or
// with KeyRows the transpose of a [N × K] row-major tile (a warp's scores against a tile of keys).
template <int K, int N, bool KeyRows>
__device__ void warp_product(const bf16* a, int lda, const bf16* b, int ldb, float* out, int ldo) {
  for (int j = 0; j < N / 16; ++j) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < K / 16; ++kk) {
      FragA fa;
      wmma::load_matrix_sync(fa, a + kk * 16, lda);
      if constexpr (KeyRows) {
        FragBT fb;
        wmma::load_matrix_sync(fb, b + j * 16 * ldb + kk * 16, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      } else {
        FragB fb;
        wmma::load_matrix_sync(fb, b + kk * 16 * ldb + j * 16, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      }
    }
    wmma::store_matrix_sync(out + j * 16, acc, ldo, wmma::mem_row_major);
  }
}

// The score of query row i against key j after scaling, masking and causality (-inf: hidden).
__device__ float masked_score(float raw, float scale, const float* mask_plane, i64 kv_len, i64 i, i64 j, i64 shift,
                              bool causal) {
  if (j >= kv_len || (causal && j > i + shift)) return -INFINITY;
  float s = raw * scale;
  if (mask_plane) s += mask_plane[i * kv_len + j];
  return s;
}

struct Geometry {
  i64 batch, kv_heads, group, q_len, kv_len;
  float scale;
  bool causal;
  i64 mask_batch_stride, mask_head_stride;
  i64 k_head_stride, v_head_stride;  // elements between key (value) heads; each head's rows dense
};

__device__ const float* mask_plane(const Geometry& g, const float* mask, i64 head) {
  if (!mask) return nullptr;
  const i64 heads = g.kv_heads * g.group;
  return mask + head / heads * g.mask_batch_stride + head % heads * g.mask_head_stride;
}

// Keys [0, end) that some query of rows [q0, q0 + kRows) may see.
__device__ i64 visible_end(const Geometry& g, i64 q0) {
  if (!g.causal) return g.kv_len;
  const i64 end = q0 + kRows + g.kv_len - g.q_len;
  return end < 0 ? 0 : (end > g.kv_len ? g.kv_len : end);
}

template <int D>
struct ForwardSmem {
  static constexpr int kTileHalf = kRows * (D + kPadHalf);
  static constexpr int kScores = 16 * (kRows + kPadFloat);    // per warp
  static constexpr int kProbs = 16 * (kRows + kPadHalf);      // per warp
  static constexpr int kOut = 16 * (D + kPadFloat);           // per warp
  static_assert(kOut <= kScores, "a warp's product with v reuses its scores' rows");
  static constexpr std::size_t bytes =
      3 * kTileHalf * sizeof(bf16) + kWarps * (kScores + kOut) * sizeof(float) + kWarps * kProbs * sizeof(bf16);
};

// One block per (query head, tile of 64 query rows).
template <int D>
__global__ void __launch_bounds__(kBlock) flash_forward_kernel(const float* q, const float* k, const float* v,
                                                               const float* mask, float* out, float* lse, Geometry g) {
  using S = ForwardSmem<D>;
  constexpr int ld = D + kPadHalf;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* ks = qs + S::kTileHalf;
  bf16* vs = ks + S::kTileHalf;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* scores = reinterpret_cast<float*>(vs + S::kTileHalf) + warp * S::kScores;
  float* acc_out = reinterpret_cast<float*>(vs + S::kTileHalf) + kWarps * S::kScores + warp * S::kOut;
  float* pv = scores;  // probs · v, once the scores are spent
  bf16* probs = reinterpret_cast<bf16*>(reinterpret_cast<float*>(vs + S::kTileHalf) + kWarps * (S::kScores + S::kOut)) +
                warp * S::kProbs;

  const i64 head = blockIdx.y, q0 = static_cast<i64>(blockIdx.x) * kRows;
  const i64 kv_item = head / (g.kv_heads * g.group) * g.kv_heads + head / g.group % g.kv_heads;
  const float* kh = k + kv_item * g.k_head_stride;
  const float* vh = v + kv_item * g.v_head_stride;
  const float* plane = mask_plane(g, mask, head);
  const i64 shift = g.kv_len - g.q_len;
  load_tile<D>(q + (head * g.q_len + q0) * D, g.q_len - q0, qs);
  // Each lane keeps half of one of its warp's 16 rows: row r, columns [half * 32, half * 32 + 32).
  const int r = lane / 2, half = lane % 2;
  const i64 i = q0 + warp * 16 + r;
  for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) acc_out[r * (D + kPadFloat) + c] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const i64 end = visible_end(g, q0);
  for (i64 k0 = 0; k0 < end; k0 += kRows) {
    __syncthreads();
    load_tile<D>(kh + k0 * D, g.kv_len - k0, ks);
    load_tile<D>(vh + k0 * D, g.kv_len - k0, vs);
    __syncthreads();
    warp_product<D, kRows, true>(qs + warp * 16 * ld, ld, ks, ld, scores, kRows + kPadFloat);
    __syncwarp();
    float s[32];
    float tile_max = -INFINITY;
    for (int c = 0; c < 32; ++c) {
      const int col = half * 32 + c;
      s[c] = i < g.q_len ? masked_score(scores[r * (kRows + kPadFloat) + col], g.scale, plane, g.kv_len, i, k0 + col,
                                        shift, g.causal)
                         : -INFINITY;
      tile_max = fmaxf(tile_max, s[c]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    const float alpha = m_new == -INFINITY ? 1.0f : __expf(m - m_new);
    float sum = 0.0f;
    for (int c = 0; c < 32; ++c) {
      const float p = m_new == -INFINITY ? 0.0f : __expf(s[c] - m_new);
      sum += p;
      probs[r * (kRows + kPadHalf) + half * 32 + c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) acc_out[r * (D + kPadFloat) + c] *= alpha;
    __syncwarp();
    warp_product<kRows, D, false>(probs, kRows + kPadHalf, vs, ld, pv, D + kPadFloat);
    __syncwarp();
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
      acc_out[r * (D + kPadFloat) + c] += pv[r * (D + kPadFloat) + c];
    __syncwarp();
  }
  if (i >= g.q_len) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  float* o = out + (head * g.q_len + i) * D;
  for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) o[c] = acc_out[r * (D + kPadFloat) + c] * inv;
  if (half == 0) lse[head * g.q_len + i] = l > 0.0f ? m + __logf(l) : -INFINITY;
}

// delta[row] = Σ_c dout[row, c] · out[row, c], a warp per row.
__global__ void attention_delta_kernel(const float* out, const float* dout, float* delta, i64 rows, int d) {
  const i64 row = static_cast<i64>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  float sum = 0.0f;
  for (int c = threadIdx.x % 32; c < d; c += 32) sum += out[row * d + c] * dout[row * d + c];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) delta[row] = sum;
}

template <int D>
struct BackwardSmem {
  static constexpr int kTileHalf = kRows * (D + kPadHalf);
  static constexpr int kSquare = kRows * (kRows + kPadFloat);       // f32 score-shaped tile
  static constexpr int kSquareHalf = kRows * (kRows + kPadHalf);    // bf16 score-shaped tile
  static constexpr int kGrad = kRows * (D + kPadFloat);             // f32 dk or dv tile, at the end
  // dq rows reuse the scores' rows, and the final dk and dv tiles the scores and dprobs.
  static_assert(kGrad <= kSquare, "gradient tiles reuse the score tiles");
  static constexpr std::size_t bytes =
      4 * kTileHalf * sizeof(bf16) + 2 * kSquareHalf * sizeof(bf16) + (2 * kSquare + 2 * kRows) * sizeof(float);
};

// One block per (query head of a group, key/value head, tile of 64 keys): its warps keep the
// tile's dk and dv in registers while it walks the head's query tiles, then add them into dk and
// dv (zeroed first, shared by the group's heads) atomically, as every tile does into dq.
template <int D>
__global__ void __launch_bounds__(kBlock) flash_backward_kernel(const float* q, const float* k, const float* v,
                                                                const float* mask, const float* lse, const float* delta,
                                                                const float* dout, float* dq, float* dk, float* dv,
                                                                Geometry g) {
  using S = BackwardSmem<D>;
  constexpr int ld = D + kPadHalf, lds = kRows + kPadFloat, ldh = kRows + kPadHalf, ldg = D + kPadFloat;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = ks + S::kTileHalf;
  bf16* qs = vs + S::kTileHalf;
  bf16* dos = qs + S::kTileHalf;
  bf16* probs = dos + S::kTileHalf;
  bf16* dscores = probs + S::kSquareHalf;
  float* scores = reinterpret_cast<float*>(dscores + S::kSquareHalf);
  float* dprobs = scores + S::kSquare;
  float* row_lse = dprobs + S::kSquare;
  float* row_delta = row_lse + kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* dq_rows = scores + warp * 16 * lds;  // the warp's own score rows, once spent

  const i64 kv_item = blockIdx.y, k0 = static_cast<i64>(blockIdx.x) * kRows;
  load_tile<D>(k + kv_item * g.k_head_stride + k0 * D, g.kv_len - k0, ks);
  load_tile<D>(v + kv_item * g.v_head_stride + k0 * D, g.kv_len - k0, vs);
  FragC acc_k[D / 16], acc_v[D / 16];  // the warp's keys [16w, 16w + 16)
#pragma unroll
  for (int j = 0; j < D / 16; ++j) {
    wmma::fill_fragment(acc_k[j], 0.0f);
    wmma::fill_fragment(acc_v[j], 0.0f);
  }
  const i64 shift = g.kv_len - g.q_len;
  // The first query that sees key k0 under causality.
  const i64 first_q = g.causal ? (k0 - shift > 0 ? k0 - shift : 0) : 0;
  const int r = lane / 2, half = lane % 2;
  {
    const i64 head = kv_item * g.group + blockIdx.z;  // over [batch, kv_heads, group]
    const float* plane = mask_plane(g, mask, head);
    for (i64 q0 = first_q / kRows * kRows; q0 < g.q_len; q0 += kRows) {
      __syncthreads();
      const i64 rows = g.q_len - q0;
      load_tile<D>(q + (head * g.q_len + q0) * D, rows, qs);
      load_tile<D>(dout + (head * g.q_len + q0) * D, rows, dos);
      for (int idx = threadIdx.x; idx < kRows; idx += kBlock) {
        row_lse[idx] = idx < rows ? lse[head * g.q_len + q0 + idx] : -INFINITY;
        row_delta[idx] = idx < rows ? delta[head * g.q_len + q0 + idx] : 0.0f;
      }
      __syncthreads();
      // Warp w: query rows [16w, 16w + 16): raw scores and dout · vᵀ.
      warp_product<D, kRows, true>(qs + warp * 16 * ld, ld, ks, ld, scores + warp * 16 * lds, lds);
      warp_product<D, kRows, true>(dos + warp * 16 * ld, ld, vs, ld, dprobs + warp * 16 * lds, lds);
      __syncwarp();
      {
        const int row = warp * 16 + r;
        const i64 i = q0 + row;
        const float row_l = row_lse[row], row_d = row_delta[row];
        for (int c = 0; c < 32; ++c) {
          const int col = half * 32 + c;
          const float s = i < g.q_len ? masked_score(scores[row * lds + col], g.scale, plane, g.kv_len, i, k0 + col,
                                                     shift, g.causal)
                                      : -INFINITY;
          const float p = (s == -INFINITY || row_l == -INFINITY) ? 0.0f : __expf(s - row_l);
          probs[row * ldh + col] = __float2bfloat16_rn(p);
          dscores[row * ldh + col] = __float2bfloat16_rn(p * (dprobs[row * lds + col] - row_d));
        }
      }
      __syncthreads();
      // Warp w: keys [16w, 16w + 16): dv += pᵀ dout, dk += dsᵀ q.
#pragma unroll
      for (int j = 0; j < D / 16; ++j) {
        for (int kk = 0; kk < kRows / 16; ++kk) {
          FragAT pt, dst;
          FragB fdo, fq;
          wmma::load_matrix_sync(pt, probs + kk * 16 * ldh + warp * 16, ldh);
          wmma::load_matrix_sync(dst, dscores + kk * 16 * ldh + warp * 16, ldh);
          wmma::load_matrix_sync(fdo, dos + kk * 16 * ld + j * 16, ld);
          wmma::load_matrix_sync(fq, qs + kk * 16 * ld + j * 16, ld);
          wmma::mma_sync(acc_v[j], pt, fdo, acc_v[j]);
          wmma::mma_sync(acc_k[j], dst, fq, acc_k[j]);
        }
      }
      // Warp w: query rows [16w, 16w + 16): dq += scale · ds k, added atomically.
      warp_product<kRows, D, false>(dscores + warp * 16 * ldh, ldh, ks, ld, dq_rows, ldg);
      __syncwarp();
      const i64 i = q0 + warp * 16 + r;
      if (i < g.q_len) {
        float* dq_row = dq + (head * g.q_len + i) * D;
        for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) atomicAdd(dq_row + c, g.scale * dq_rows[r * ldg + c]);
      }
    }
  }
  __syncthreads();
  float* dk_tile = scores;  // the score tiles are spent
  float* dv_tile = dprobs;
#pragma unroll
  for (int j = 0; j < D / 16; ++j) {
    wmma::store_matrix_sync(dk_tile + warp * 16 * ldg + j * 16, acc_k[j], ldg, wmma::mem_row_major);
    wmma::store_matrix_sync(dv_tile + warp * 16 * ldg + j * 16, acc_v[j], ldg, wmma::mem_row_major);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kRows * D; idx += kBlock) {
    const int row = idx / D, c = idx % D;
    if (k0 + row >= g.kv_len) continue;
    atomicAdd(dk + (kv_item * g.kv_len + k0 + row) * D + c, g.scale * dk_tile[row * ldg + c]);
    atomicAdd(dv + (kv_item * g.kv_len + k0 + row) * D + c, dv_tile[row * ldg + c]);
  }
}

Geometry geometry(const AttentionGeometry& a) {
  if (!(a.head_dim == a.v_dim && (a.head_dim == 32 || a.head_dim == 64)))
    throw Error("[attention] the CUDA kernel takes head sizes 32 and 64 with v_dim equal to head_dim");
  return {a.batch, a.kv_heads, a.group, a.q_len, a.kv_len, a.scale, a.causal, a.mask_batch_stride,
          a.mask_head_stride, a.k_stride(), a.v_stride()};
}

template <int D>
void forward(const float* q, const float* k, const float* v, const float* mask, float* out, float* lse,
             const Geometry& g) {
  const std::size_t bytes = ForwardSmem<D>::bytes;
  check_cuda(cudaFuncSetAttribute(flash_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)),
             "attention_forward shared memory");
  const dim3 grid(static_cast<unsigned>((g.q_len + kRows - 1) / kRows),
                  static_cast<unsigned>(g.batch * g.kv_heads * g.group));
  flash_forward_kernel<D><<<grid, kBlock, bytes, stream()>>>(q, k, v, mask, out, lse, g);
  check_launch("attention_forward");
}

template <int D>
void backward(const float* q, const float* k, const float* v, const float* mask, const float* lse, const float* delta,
              const float* dout, float* dq, float* dk, float* dv, const Geometry& g) {
  const std::size_t bytes = BackwardSmem<D>::bytes;
  check_cuda(cudaFuncSetAttribute(flash_backward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)),
             "attention_backward shared memory");
  const dim3 grid(static_cast<unsigned>((g.kv_len + kRows - 1) / kRows), static_cast<unsigned>(g.batch * g.kv_heads),
                  static_cast<unsigned>(g.group));
  flash_backward_kernel<D><<<grid, kBlock, bytes, stream()>>>(q, k, v, mask, lse, delta, dout, dq, dk, dv, g);
  check_launch("attention_backward");
}

}  // namespace

bool attention_fits(std::int64_t head_dim, std::int64_t v_dim, bool bf16_products) {
  return bf16_products && head_dim == v_dim && (head_dim == 32 || head_dim == 64);
}

void attention_forward(const float* q, const float* k, const float* v, const float* mask, float* out, float* lse,
                       const AttentionGeometry& a) {
  const Geometry g = geometry(a);
  if (g.q_len == 0 || g.batch * g.kv_heads * g.group == 0) return;
  if (a.head_dim == 32) {
    forward<32>(q, k, v, mask, out, lse, g);
  } else {
    forward<64>(q, k, v, mask, out, lse, g);
  }
}

void attention_backward(const float* q, const float* k, const float* v, const float* mask, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttentionGeometry& a) {
  const Geometry g = geometry(a);
  const i64 rows = g.batch * g.kv_heads * g.group * g.q_len;
  const std::size_t kv_bytes = static_cast<std::size_t>(g.batch * g.kv_heads * g.kv_len * a.head_dim) * sizeof(float);
  check_cuda(cudaMemsetAsync(dq, 0, static_cast<std::size_t>(rows * a.head_dim) * sizeof(float), stream()), "dq");
  check_cuda(cudaMemsetAsync(dk, 0, kv_bytes, stream()), "dk");
  check_cuda(cudaMemsetAsync(dv, 0, kv_bytes, stream()), "dv");
  if (g.kv_len == 0 || rows == 0) return;
  float* delta = static_cast<float*>(allocate(static_cast<std::size_t>(rows) * sizeof(float)));
  attention_delta_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream()>>>(out, dout, delta, rows,
                                                                                     static_cast<int>(a.head_dim));
  check_launch("attention_backward delta");
  if (a.head_dim == 32) {
    backward<32>(q, k, v, mask, lse, delta, dout, dq, dk, dv, g);
  } else {
    backward<64>(q, k, v, mask, lse, delta, dout, dq, dk, dv, g);
  }
  release(delta, static_cast<std::size_t>(rows) * sizeof(float));  // reused in stream order
}

}  // namespace loracpp::backend::cuda
