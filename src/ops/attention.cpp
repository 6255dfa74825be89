// Scaled dot-product attention with causal and additive masks and grouped-query heads. Composed
// from matmul, softmax and broadcasting adds, so its backward comes from theirs; it holds the
// [q_len, kv_len] scores per head (a fused kernel that does not is future work for long contexts).
#include <cmath>
#include <limits>

#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {
// [q_len, kv_len]: 0 where query i may see key j (j <= i + kv_len - q_len), -inf elsewhere.
Tensor causal_mask(std::int64_t q_len, std::int64_t kv_len, DType dtype) {
  std::vector<float> values(static_cast<std::size_t>(q_len * kv_len), 0.0f);
  for (std::int64_t i = 0; i < q_len; ++i)
    for (std::int64_t j = i + kv_len - q_len + 1; j < kv_len; ++j)
      if (j >= 0) values[static_cast<std::size_t>(i * kv_len + j)] = -std::numeric_limits<float>::infinity();
  return Tensor::from_floats(values, {q_len, kv_len}, dtype);
}
}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  trace_op(OpId::attention);
  constexpr std::string_view op = "attention";
  for (const auto* t : {&q, &k, &v}) {
    require_floating(op, *t, "q, k and v");
    require_rank(op, *t, 4, "q, k and v");
    require_same_dtype(op, q, *t);
  }
  require_same_device(op, {q, k, v, options.mask});
  const std::int64_t batch = q.size(0), q_heads = q.size(1), q_len = q.size(2), head_dim = q.size(3);
  const std::int64_t kv_heads = k.size(1), kv_len = k.size(2), v_dim = v.size(3);
  check(k.size(0) == batch && v.size(0) == batch && k.size(3) == head_dim && v.size(1) == kv_heads &&
            v.size(2) == kv_len,
        op, "shapes disagree: q {}, k {}, v {}", shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  check(kv_heads > 0 && q_heads % kv_heads == 0, op, "query heads {} must be a multiple of key/value heads {}",
        q_heads, kv_heads);
  const std::int64_t group = q_heads / kv_heads;
  const float scale_value = options.scale.value_or(1.0f / std::sqrt(static_cast<float>(head_dim)));

  // Query heads h*group .. h*group+group-1 share key/value head h: fold the group into the rows.
  const Tensor qg = reshape(q, {batch, kv_heads, group * q_len, head_dim});
  Tensor scores = scale(matmul(qg, transpose(k, -1, -2)), scale_value);  // [b, kvh, group*q_len, kv_len]
  const Shape full = {batch, q_heads, q_len, kv_len};
  const bool masked = options.causal || options.mask.defined();
  if (masked) {
    scores = reshape(scores, full);
    if (options.causal) scores = add(scores, causal_mask(q_len, kv_len, q.dtype()));
    if (options.mask.defined()) {
      require_floating(op, options.mask, "mask");
      require_same_dtype(op, q, options.mask);
      check(broadcast_shapes(options.mask.shape(), full, op) == full, op,
            "mask {} must broadcast to [batch, q_heads, q_len, kv_len] = {}", shape_str(options.mask.shape()),
            shape_str(full));
      scores = add(scores, options.mask);
    }
    scores = reshape(scores, {batch, kv_heads, group * q_len, kv_len});
  }
  const Tensor probs = softmax(scores, -1);
  return reshape(matmul(probs, v), {batch, q_heads, q_len, v_dim});
}

}  // namespace loracpp::ops
