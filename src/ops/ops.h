#pragma once
// The ops: free functions over Tensors. Each one checks its inputs (errors start with the op's
// name), computes its forward pass through the device's kernels, and records its backward pass
// when an input requires grad. `matmul(a, b)` means a @ b; Linear weights are [out, in].
#include <cstdint>
#include <optional>
#include <vector>

#include "backend/kernels.h"
#include "core/tensor.h"

namespace loracpp::ops {

using backend::RopeLayout;

// ---- layout and shape (views where the strides allow) ----
Tensor contiguous(const Tensor& x);
Tensor to_dtype(const Tensor& x, DType dtype);
Tensor reshape(const Tensor& x, Shape shape);  // one size may be -1
Tensor permute(const Tensor& x, const Shape& dims);
Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1);
Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t end);  // [start, end)
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor concat(const std::vector<Tensor>& xs, std::int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, std::int64_t dim);
// Copies src into dst, a view of a writable tensor of the same shape and dtype. Not recorded (it is
// for KV caches and state updates), so src must not require grad while grad mode is on.
void assign(const Tensor& dst, const Tensor& src);
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view place);

// ---- arithmetic (numpy broadcasting; both operands of one floating dtype) ----
Tensor add(const Tensor& a, const Tensor& b);
// acc += x in acc's own storage (contiguous f32, x of the same shape and device), never recorded:
// for the autograd engine's sums of gradients it alone holds.
void add_into(Tensor& acc, const Tensor& x);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float alpha);
Tensor sum(const Tensor& x);  // all elements -> scalar []
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
// Sums x down to shape (the reverse of broadcasting); used by the backward of broadcasting ops.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- products ----
// a [..., m, k] @ b [..., k, n] -> [..., m, n]; batch dims broadcast. A transposed view of either
// operand's last two dims goes to BLAS as a transpose flag, without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);
// A setting for the ops on this thread, turned on within a guard's scope: constructed with on =
// false, the guard leaves the setting as it was (for callers that decide at run time).
template <class Tag>
class ScopedSetting {
 public:
  explicit ScopedSetting(bool on = true) : previous_(value_) { value_ = value_ || on; }
  ~ScopedSetting() { value_ = previous_; }
  ScopedSetting(const ScopedSetting&) = delete;
  ScopedSetting& operator=(const ScopedSetting&) = delete;
  static bool on() { return value_; }

 private:
  static thread_local inline bool value_ = false;
  bool previous_;
};
// Within its scope, a model over weights in blocks (q8_0, q4_0) computes as the bf16 path does, as
// QLoRA computes over 4-bit weights: products with more than a few rows widen the blocks to bf16 (a
// slice or one layer's weight at a time, never held) and round the other operand to bf16 (f32
// accumulation); LoRA layers, the output layer's loss and attention take their bf16 forms. `lora
// train`, `eval` and `generate` (for a prompt's pass) set it where the CPU multiplies bf16
// natively. Outside it such products widen to f32.
using Bf16BlockProducts = ScopedSetting<struct Bf16BlockProductsTag>;
inline bool bf16_block_products() { return Bf16BlockProducts::on(); }
// Within its scope, a few rows (a generated token) against weights in blocks are quantised to 8
// bits per run of 32 values and multiplied in integers, as llama.cpp multiplies a token by its
// quantised weights, where the CPU has 8-bit dot products (backend/cpu/gemm_blocks.h); `lora
// generate` and the benchmark set it. Outside it, or without them, such rows read the blocks in
// place with f32 activations.
using Q8BlockRows = ScopedSetting<struct Q8BlockRowsTag>;
inline bool q8_block_rows() { return Q8BlockRows::on(); }
// What the two settings above ask of a product against blocks.
inline backend::BlockProducts block_products() { return {.bf16 = bf16_block_products(), .q8_rows = q8_block_rows()}; }
// x [..., in], weight [out, in], bias [out] (optional) -> [..., out]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
// x [..., in] -> x Wᵀ + bias + scale (x Aᵀ) Bᵀ in one op, W [out, in] (f32 or bf16), A [r, in],
// B [out, r]: x is read once for both products, the adapter's product accumulates straight into
// the output, and the backward pass does the same (a LoRA layer without dropout).
Tensor lora_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& a, const Tensor& b,
                   float scale);
// weight [vocab, dim], ids [...] (i32/i64) -> [..., dim]
Tensor embedding(const Tensor& weight, const Tensor& ids);

// ---- normalisation and activations ----
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);  // over the last dim
// weight and bias may be undefined (no affine part)
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
Tensor softmax(const Tensor& x, std::int64_t dim = -1);
Tensor silu(const Tensor& x);
enum class GeluApproximation { none, tanh };
Tensor gelu(const Tensor& x, GeluApproximation approximation = GeluApproximation::none);
Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training.
Tensor dropout(const Tensor& x, float p, std::uint64_t seed, bool training = true);

// ---- losses ----
// logits [..., vocab], targets [...] (i32/i64): mean over targets != ignore_index (0 when none).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index = -100);
// cross_entropy(linear(x, weight), targets) without ever holding all the logits: x [..., in],
// weight [vocab, in] (f32, or bf16 for the bf16 path), targets [...]. Rows go through in chunks of
// chunk_rows (0: see default_cross_entropy_chunk); when x or the weight needs a gradient, the chunk's
// gradients are made in the forward pass while its logits are at hand, and the backward pass only
// scales them by the upstream gradient.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets,
                            std::int64_t ignore_index = -100, std::int64_t chunk_rows = 0);
// Rows per chunk of `rows` when none is asked for: at most the largest of 256, what 8M logits hold
// and what makes a chunk of x 256K values (but never more than 32M logits), since fewer leave the
// logits' GEMM (whose inner dimension is only `in`) short of BLAS's speed: with in = 288, 262 rows
// ran at 129 GFLOP/s and 512 at 143. The rows are split evenly, so no short last chunk runs slower.
std::int64_t default_cross_entropy_chunk(std::int64_t rows, std::int64_t vocab, std::int64_t in);

// ---- attention ----
struct RopeOptions {
  float theta = 10000.0f;
  RopeLayout layout = RopeLayout::half;
  std::int64_t position_offset = 0;
  // Per-pair inverse frequencies [head_dim/2]; empty means theta^(-2i/head_dim).
  std::vector<float> inv_freq{};
};
std::vector<float> rope_inv_freq(std::int64_t head_dim, float theta);
// x [batch, heads, seq, head_dim]: rotates pairs of features by position * inv_freq.
Tensor rope(const Tensor& x, const RopeOptions& options);
// A projection's output split into heads and rotated: x [batch, seq, heads * head_dim] ->
// [batch, heads, seq, head_dim], as rope(transpose(reshape(x, [batch, seq, heads, head_dim]), 1, 2))
// but without the copies between the layouts (forward and backward) where the backend has it.
Tensor rope_heads(const Tensor& x, std::int64_t heads, const RopeOptions& options);

struct AttentionOptions {
  bool causal = false;
  Tensor mask{};               // additive, broadcastable to [batch, q_heads, q_len, kv_len]
  std::optional<float> scale{};  // default 1/sqrt(head_dim)
  // The fused kernels multiply in bf16 with f32 accumulation (the bf16 path); softmax stays f32.
  bool bf16_products = false;
};
// q [batch, q_heads, q_len, head_dim], k [batch, kv_heads, kv_len, head_dim],
// v [batch, kv_heads, kv_len, v_dim] -> [batch, q_heads, q_len, v_dim]; q_heads a multiple of
// kv_heads (grouped-query). Causal: query i sees keys j <= i + kv_len - q_len.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

// ---- convolution and pooling (NCHW) ----
struct Conv2dOptions {
  std::int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};
// x [n, c, h, w] -> [n, c*kh*kw, out_h*out_w]
Tensor im2col(const Tensor& x, std::int64_t kernel_h, std::int64_t kernel_w, const Conv2dOptions& options);
// x [n, c, h, w], weight [o, c, kh, kw], bias [o] (optional) -> [n, o, out_h, out_w]
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, const Conv2dOptions& options = {});
struct Pool2dOptions {
  std::int64_t kernel_h = 2, kernel_w = 2;
  std::int64_t stride_h = 0, stride_w = 0;  // 0: the kernel size
  std::int64_t pad_h = 0, pad_w = 0;
};
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);  // padding counted in the average

}  // namespace loracpp::ops
