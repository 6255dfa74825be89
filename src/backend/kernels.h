#pragma once
// The one dispatch point between ops and backends. Every kernel is listed once below with its
// signature; each backend fills a KernelTable from this list, and an op fetches its kernel with
// LORACPP_KERNEL(device, name), which throws "[name] has no CUDA implementation" for a gap
// instead of silently running elsewhere. Kernels take raw device pointers to contiguous f32
// (ops convert other dtypes), row-major; gemm_bf16 takes bf16 operands, gemm_blocks a weight in
// blocks (q8_0, q4_0: core/blocks.h).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/device.h"
#include "core/dtype.h"
#include "core/host_device.h"

namespace loracpp::backend {

using i64 = std::int64_t;

enum class BinaryOp : std::uint8_t { add, sub, mul, div };
LORACPP_HOST_DEVICE inline float apply_binary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return 0;
}
enum class UnaryOp : std::uint8_t { silu, gelu_tanh, gelu_erf };
// half: HuggingFace layout, pairs (i, i + d/2); interleaved: llama2.c/GGUF layout, pairs (2i, 2i+1).
enum class RopeLayout : std::uint8_t { half, interleaved };

// How a product against a weight in blocks (gemm_blocks, lora_rows) may round its other operand;
// each applies only where the CPU has those products natively, else the product is f32.
struct BlockProducts {
  bool bf16 = false;     // more than a few rows: a and the widened weight rounded to bf16 (f32 sums)
  bool q8_rows = false;  // a few rows: each run of 32 of a's values quantised to 8 bits, integer sums
};

struct Conv2dGeometry {  // one image: x [channels, height, width] -> cols [channels*kh*kw, out_h*out_w]
  i64 channels, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w;
};
struct Pool2dGeometry {  // planes = batch*channels, each [height, width] -> [out_h, out_w]
  i64 planes, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w;
};

// Attention of one batch: q [batch, kv_heads, group, q_len, head_dim] (the query heads sharing a
// key/value head are adjacent), k [batch, kv_heads, kv_len, head_dim], v [.., kv_len, v_dim],
// out [batch, kv_heads, group, q_len, v_dim], lse [batch, kv_heads, group, q_len]. Query i sees
// key j when j <= i + kv_len - q_len (causal). mask: additive [q_len, kv_len] planes, the plane of
// (batch b, query head h) at b * mask_batch_stride + h * mask_head_stride (0 strides broadcast).
struct AttentionGeometry {
  i64 batch, kv_heads, group, q_len, kv_len, head_dim, v_dim;
  float scale;
  bool causal;
  i64 mask_batch_stride, mask_head_stride;
  // Multiply the tiles in bf16 with f32 accumulation (the bf16 training path); softmax stays f32.
  // A backend without bf16 products computes in f32.
  bool bf16_products = false;
  // Elements from one key (value) head to the next, batch-major, each head's rows dense: a KV
  // cache's slice is read in place. -1: packed heads, kv_len * head_dim (v_dim) apart. The
  // gradients dk and dv are always packed.
  i64 k_head_stride = -1, v_head_stride = -1;
  i64 k_stride() const { return k_head_stride >= 0 ? k_head_stride : kv_len * head_dim; }
  i64 v_stride() const { return v_head_stride >= 0 ? v_head_stride : kv_len * v_dim; }
};

// X(name, signature)
#define LORACPP_KERNELS(X)                                                                                   \
  /* dst[n] (dst_dtype) = src[n] (src_dtype) */                                                              \
  X(convert, void(const void* src, DType src_dtype, void* dst, DType dst_dtype, i64 n))                      \
  /* dst viewed with dst_strides = src viewed with src_strides, over shape (elements of element_size) */     \
  X(copy_strided, void(const void* src, const i64* src_strides, void* dst, const i64* dst_strides,           \
                       const i64* shape, int rank, std::size_t element_size))                                \
  /* c[m,n] = alpha * op(a)[m,k] op(b)[k,n] + beta * c; op transposes when its flag is set */                \
  X(gemm, void(bool trans_a, bool trans_b, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda,        \
               const float* b, i64 ldb, float beta, float* c, i64 ldc))                                      \
  /* c[m,n] (f32) = alpha * a[m,k] (bf16, row-major) op(b) (bf16) + beta * c: b is [n,k] when trans_b,    \
     else [k,n]; f32 accumulation (oneDNN where the CPU multiplies bf16, else our f32 kernel, widened as     \
     packed); c is not read when beta is 0 */                                                                \
  X(gemm_bf16, void(bool trans_b, i64 m, i64 n, i64 k, float alpha, const std::uint16_t* a, i64 lda,        \
                    const std::uint16_t* b, i64 ldb, float beta, float* c, i64 ldc))                         \
  /* c[m,n] (f32) = a[m,k] op(b) + scale t[m,r] op(l), all bf16 with f32 accumulation: a frozen product \
     and a LoRA branch's rank-r expansion in one pass over c (y = x Wᵀ + s t Bᵀ with l = B [n,r] and      \
     trans_b; dx = g W + s u A with l = A [r,n]). op(l) reads l as gemm_bf16 reads b; c is not read.      \
     Optional: ops fall back to two gemm_bf16 calls where a backend leaves it out */                      \
  X(gemm_bf16_low_rank, void(bool trans_b, i64 m, i64 n, i64 k, i64 r, const std::uint16_t* a, i64 lda,    \
                             const std::uint16_t* b, i64 ldb, float scale, const std::uint16_t* t, i64 ldt, \
                             const std::uint16_t* l, i64 ldl, float* c, i64 ldc))                           \
  /* c[m,n] (f32) = a[m,k] (f32, row-major) op(w) + beta c, w a weight of block dtype w_dtype (q8_0,    \
     q4_0) stored row-major in whole blocks: [n,k] when trans_b (x Wᵀ), else [k,n] (a gradient times W);  \
     c is not read when beta is 0; `products` says how a may be rounded */                               \
  X(gemm_blocks, void(DType w_dtype, BlockProducts products, bool trans_b, i64 m, i64 n, i64 k,             \
                      const float* a, i64 lda, const void* w, float beta, float* c, i64 ldc))                \
  /* a few rows (generated tokens) through a LoRA projection, in one pass over its weights: t = x Aᵀ,  \
     y = x Wᵀ + scale t Bᵀ; x [rows, in], W [out, in] (f32; bf16 multiplied by x rounded to bf16; blocks), \
     A [r, in], B [out, r] f32, t [rows, r] and y [rows, out] written; blocks take `products`' q8_rows. \
     Optional: ops fall back to the separate products where a backend leaves it out */                     \
  X(lora_rows, void(const float* x, const void* w, DType w_dtype, BlockProducts products, const float* a,    \
                    const float* b, i64 rows, i64 in, i64 out, i64 r, float scale, float* t, float* y))      \
  /* out[shape] = a op b, a and b read through strides (0 on broadcast dims) */                              \
  X(binary, void(BinaryOp op, const float* a, const i64* a_strides, const float* b, const i64* b_strides,    \
                 float* out, const i64* shape, int rank))                                                    \
  /* y[n] = alpha * x[n] */                                                                                  \
  X(scale, void(const float* x, float alpha, float* y, i64 n))                                               \
  X(unary_forward, void(UnaryOp op, const float* x, float* y, i64 n))                                        \
  /* dx[n] = dy[n] * f'(x[n]) */                                                                             \
  X(unary_backward, void(UnaryOp op, const float* x, const float* dy, float* dx, i64 n))                     \
  /* out[rows] = sum over cols of x[rows, cols] */                                                           \
  X(sum_rows, void(const float* x, float* out, i64 rows, i64 cols))                                          \
  /* double sum of x[n]^2, for global norms */                                                               \
  X(sum_squares, double(const float* x, i64 n))                                                              \
  /* out[n, dim] = weight[ids[n], dim] */                                                                    \
  /* out[i, :] = weight[ids[i], :], rows of dim elements of element_size bytes (2, 4 or 8) */            \
  X(embedding_forward, void(const void* weight, const i64* ids, void* out, i64 n, i64 dim,                 \
                            std::size_t element_size))                                                   \
  /* dweight[ids[n], dim] += dy[n, dim] */                                                                   \
  X(embedding_backward, void(const float* dy, const i64* ids, float* dweight, i64 n, i64 dim))               \
  /* x, y [rows, dim]; w [dim]; rstd [rows] */                                                               \
  X(rms_norm_forward, void(const float* x, const float* w, float* y, float* rstd, i64 rows, i64 dim,         \
                           float eps))                                                                       \
  /* dw [dim] accumulated, skipped when null */                                                              \
  X(rms_norm_backward, void(const float* x, const float* w, const float* rstd, const float* dy, float* dx,    \
                            float* dw, i64 rows, i64 dim))                                                   \
  /* x, y [rows, dim]; w, b [dim] or null; mean, rstd [rows] */                                              \
  X(layer_norm_forward, void(const float* x, const float* w, const float* b, float* y, float* mean,          \
                             float* rstd, i64 rows, i64 dim, float eps))                                     \
  X(layer_norm_backward, void(const float* x, const float* w, const float* mean, const float* rstd,          \
                              const float* dy, float* dx, float* dw, float* db, i64 rows, i64 dim))          \
  /* x, y [rows, cols], softmax over cols */                                                                 \
  X(softmax_forward, void(const float* x, float* y, i64 rows, i64 cols))                                     \
  X(softmax_backward, void(const float* y, const float* dy, float* dx, i64 rows, i64 cols))                  \
  /* x, y [outer, seq, head_dim]; position of row t is pos_offset + t; inv_freq [head_dim/2];               \
     inverse rotates by -angle (the backward pass) */                                                        \
  X(rope, void(const float* x, float* y, i64 outer, i64 seq, i64 head_dim, const float* inv_freq,            \
               i64 pos_offset, RopeLayout layout, bool inverse))                                             \
  /* rope between a projection's layout and the heads': x [batch, seq, heads, head_dim] -> y [batch, heads,   \
     seq, head_dim] when to_heads, else the reverse (a backward pass); optional (CUDA: none) */              \
  X(rope_heads, void(const float* x, float* y, i64 batch, i64 heads, i64 seq, i64 head_dim,                  \
                     const float* inv_freq, i64 pos_offset, RopeLayout layout, bool inverse, bool to_heads)) \
  /* out[n] = silu(gate[n]) * up[n] */                                                                       \
  X(swiglu_forward, void(const float* gate, const float* up, float* out, i64 n))                             \
  X(swiglu_backward, void(const float* gate, const float* up, const float* dy, float* dgate, float* dup,     \
                          i64 n))                                                                            \
  /* the same gradients rounded to bf16, for projections that multiply them in bf16 (either may be null) */  \
  X(swiglu_backward_bf16, void(const float* gate, const float* up, const float* dy, std::uint16_t* dgate,    \
                               std::uint16_t* dup, i64 n))                                                   \
  /* logits [rows, vocab]; targets [rows]; loss [rows] (0 where ignored); lse [rows] */                      \
  X(cross_entropy_forward, void(const float* logits, const i64* targets, float* loss, float* lse, i64 rows,  \
                                i64 vocab, i64 ignore_index))                                                \
  /* dlogits = (softmax(logits) - onehot(target)) * grad_scale, rows with ignored targets get 0 */           \
  X(cross_entropy_backward, void(const float* logits, const i64* targets, const float* lse,                  \
                                 float grad_scale, float* dlogits, i64 rows, i64 vocab, i64 ignore_index))   \
  /* both at once, each row's exponentials taken once; dlogits may be logits (written in place) */         \
  X(cross_entropy_with_grad, void(const float* logits, const i64* targets, float* loss, float* lse,           \
                                  float grad_scale, float* dlogits, i64 rows, i64 vocab, i64 ignore_index))  \
  /* both at once, the gradient rounded to bf16 (the operand of the bf16 product that follows) */          \
  X(cross_entropy_with_bf16_grad, void(const float* logits, const i64* targets, float* loss, float* lse,      \
                                       float grad_scale, std::uint16_t* dlogits, i64 rows, i64 vocab,        \
                                       i64 ignore_index))                                                    \
  /* the loss of each row and its gradient's product with a frozen bf16 output weight w [vocab, in]:       \
     dx [rows, in] = grad_scale (softmax(logits) - onehot(target)) w, zero for ignored rows; exps          \
     [rows, vocab] is bf16 scratch. Optional: ops fall back to cross_entropy_with_bf16_grad and gemm_bf16  \
     where a backend leaves it out */                                                                        \
  X(cross_entropy_bf16_input_grad, void(const float* logits, const i64* targets, float* loss, float* lse,    \
                                        float grad_scale, const std::uint16_t* w, std::uint16_t* exps,       \
                                        float* dx, i64 rows, i64 vocab, i64 in, i64 ignore_index))           \
  /* the same from x [rows, in] (f32, rounded to bf16 for the products) without a logits buffer: the     \
     loss, lse and dx of every row, the logits held a block at a time. Optional, and a backend may       \
     decline a call (false, nothing written): ops then take the chunked path */                          \
  X(linear_cross_entropy_bf16, bool(const float* x, const std::uint16_t* w, const i64* targets, float* loss, \
                                    float* lse, float grad_scale, float* dx, i64 rows, i64 vocab, i64 in,   \
                                    i64 ignore_index))                                                      \
  /* fused attention that never holds more than a tile of scores; lse saves the softmax for backward */    \
  X(attention_forward, void(const float* q, const float* k, const float* v, const float* mask, float* out,   \
                            float* lse, const AttentionGeometry& g))                                         \
  /* the same over keys and values held in bf16 (a KV cache on the bf16 path), read in place, widened to  \
     f32 where the tiles multiply in f32; inference only (no backward) */                                   \
  X(attention_forward_bf16_kv, void(const float* q, const std::uint16_t* k, const std::uint16_t* v,          \
                                    const float* mask, float* out, float* lse, const AttentionGeometry& g))  \
  /* dq, dk, dv overwritten; recomputes the scores tile by tile from q, k and lse */                         \
  X(attention_backward, void(const float* q, const float* k, const float* v, const float* mask,              \
                             const float* out, const float* lse, const float* dout, float* dq, float* dk,    \
                             float* dv, const AttentionGeometry& g))                                         \
  X(im2col, void(const float* x, float* cols, const Conv2dGeometry& g))                                      \
  /* dx += col2im(dcols) */                                                                                  \
  X(col2im, void(const float* dcols, float* dx, const Conv2dGeometry& g))                                    \
  /* argmax [planes, out_h, out_w]: index into the plane, -1 when the window is all padding */               \
  X(max_pool2d_forward, void(const float* x, float* y, i64* argmax, const Pool2dGeometry& g))                \
  X(max_pool2d_backward, void(const float* dy, const i64* argmax, float* dx, const Pool2dGeometry& g))       \
  /* average over the window, padding counted (count_include_pad) */                                         \
  X(avg_pool2d_forward, void(const float* x, float* y, const Pool2dGeometry& g))                             \
  X(avg_pool2d_backward, void(const float* dy, float* dx, const Pool2dGeometry& g))                          \
  /* mask[n] = 0 with probability p, else 1/(1-p); the value at n depends only on (seed, n) */                \
  X(dropout_mask, void(float* mask, i64 n, float p, std::uint64_t seed))                                     \
  /* one AdamW step (decoupled weight decay); bias_correction1/2 = 1 - beta^t */                             \
  X(adamw_update, void(float* param, const float* grad, float* m, float* v, i64 n, float lr, float beta1,    \
                       float beta2, float eps, float weight_decay, float bias_correction1,                   \
                       float bias_correction2))                                                              \
  /* one SGD step with momentum (PyTorch's convention); momentum_buffer may be null when momentum is 0 */    \
  X(sgd_update, void(float* param, const float* grad, float* momentum_buffer, i64 n, float lr,               \
                     float momentum, float dampening, float weight_decay, bool nesterov, bool first_step))

namespace signature {
#define LORACPP_KERNEL_SIGNATURE(name, ...) using name = __VA_ARGS__;
LORACPP_KERNELS(LORACPP_KERNEL_SIGNATURE)
#undef LORACPP_KERNEL_SIGNATURE
}  // namespace signature

struct KernelTable {
#define LORACPP_KERNEL_SLOT(name, ...) signature::name* name = nullptr;
  LORACPP_KERNELS(LORACPP_KERNEL_SLOT)
#undef LORACPP_KERNEL_SLOT
};

const KernelTable& kernels(Device device);
[[noreturn]] void missing_kernel(std::string_view name, Device device);

template <class Fn>
Fn* require_kernel(Fn* fn, std::string_view name, Device device) {
  if (fn == nullptr) missing_kernel(name, device);
  return fn;
}

// Counts what the GEMM kernels did, so tests can prove which products were (not) computed.
struct GemmCounters {
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> flops{0};
  void reset() {
    calls = 0;
    flops = 0;
  }
};
GemmCounters& gemm_counters();
// Every GEMM kernel, on every backend, counts itself here.
inline void count_gemm(i64 m, i64 n, i64 k) {
  auto& counters = gemm_counters();
  counters.calls += 1;
  counters.flops += static_cast<std::uint64_t>(2 * m * n * k);
}

}  // namespace loracpp::backend

#define LORACPP_KERNEL(device, name) \
  ::loracpp::backend::require_kernel(::loracpp::backend::kernels(device).name, #name, device)
