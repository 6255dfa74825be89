// Scaled dot-product attention with causal and additive masks and grouped-query heads. Where the
// backend's fused kernels take the shape (the CPU's take all; the GPU's, bf16 products of head
// sizes 32 and 64) it never holds more than a tile of scores and its backward recomputes them;
// elsewhere it is composed from matmul, softmax and broadcasting adds, whose backward comes from
// theirs.
#include <cmath>
#include <limits>

#include "ops/common.h"
#include "ops/ops.h"
#if defined(LORACPP_WITH_CUDA)
#include "backend/cuda/cuda_backend.h"
#endif

namespace loracpp::ops {

using namespace detail;

namespace {
// [q_len, kv_len] on device: 0 where query i may see key j (j <= i + kv_len - q_len), -inf
// elsewhere. Every layer asks for the same one, so the latest is kept.
Tensor causal_mask(std::int64_t q_len, std::int64_t kv_len, DType dtype, Device device) {
  thread_local Tensor latest;
  if (latest.defined() && latest.shape() == Shape{q_len, kv_len} && latest.dtype() == dtype &&
      latest.device() == device)
    return latest;
  std::vector<float> values(static_cast<std::size_t>(q_len * kv_len), 0.0f);
  for (std::int64_t i = 0; i < q_len; ++i)
    for (std::int64_t j = i + kv_len - q_len + 1; j < kv_len; ++j)
      if (j >= 0) values[static_cast<std::size_t>(i * kv_len + j)] = -std::numeric_limits<float>::infinity();
  latest = Tensor::from_floats(values, {q_len, kv_len}, dtype).to(device);
  return latest;
}
}  // namespace

namespace {

// The CPU's fused kernels take every shape; the GPU's multiply on tensor cores in bf16 and take
// some head sizes (backend/cuda). Other attention is composed of products and the softmax.
bool fused_kernel_fits(Device device, std::int64_t head_dim, std::int64_t v_dim, bool bf16_products) {
  if (backend::kernels(device).attention_forward == nullptr) return false;
#if defined(LORACPP_WITH_CUDA)
  if (device == Device::cuda) return backend::cuda::attention_fits(head_dim, v_dim, bf16_products);
#endif
  (void)head_dim, (void)v_dim, (void)bf16_products;
  return true;
}

// k or v as the fused kernels read it (in f32, or in bf16 where asked to keep it so), and the
// elements from one head to the next: where no gradient is recorded and each head's rows are
// dense with the heads evenly spaced (a KV cache's slice during generation), the tensor itself, so
// that a generated token does not copy the whole cache; otherwise a packed copy.
std::pair<Tensor, std::int64_t> kernel_heads(const Tensor& x, bool recording, bool keep_bf16 = false) {
  const bool keep = x.dtype() == DType::f32 || (keep_bf16 && x.dtype() == DType::bf16);
  const Tensor f = keep ? x : as_f32(x);  // as_f32 packs
  const std::int64_t batch = f.size(0), heads = f.size(1), len = f.size(2), dim = f.size(3);
  const Shape& s = f.strides();
  const bool rows_dense = (dim <= 1 || s[3] == 1) && (len <= 1 || s[2] == dim);
  const std::int64_t stride = heads > 1 ? s[1] : (batch > 1 ? s[0] : len * dim);
  const bool evenly = batch <= 1 || s[0] == heads * stride;
  if (!recording && rows_dense && evenly && stride >= 0) return {f, stride};
  return {contiguous_raw(f), len * dim};
}

// The fused kernels over f32 (copies where needed, see kernel_heads); mask broadcast to [1 or
// batch, 1 or heads, q, kv].
Tensor fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, float scale_value,
                       bool causal, bool bf16_products) {
  const std::int64_t batch = q.size(0), q_heads = q.size(1), q_len = q.size(2), head_dim = q.size(3);
  const std::int64_t kv_heads = k.size(1), kv_len = k.size(2), v_dim = v.size(3);
  backend::AttentionGeometry g{batch, kv_heads, q_heads / kv_heads, q_len, kv_len, head_dim, v_dim,
                               scale_value, causal, 0, 0, bf16_products};
  Tensor m;
  if (mask.defined()) {
    Tensor m4 = mask;
    while (m4.dim() < 4) m4 = reshape(m4, [&] {
      Shape s = m4.shape();
      s.insert(s.begin(), 1);
      return s;
    }());
    const std::int64_t mb = m4.size(0), mh = m4.size(1);
    m = contiguous_raw(as_f32(broadcast_to(m4, {mb, mh, q_len, kv_len})));
    g.mask_head_stride = mh == 1 ? 0 : q_len * kv_len;
    g.mask_batch_stride = mb == 1 ? 0 : mh * q_len * kv_len;
  }
  const bool recording = autograd::should_record({q, k, v});
  const Tensor qf = contiguous_raw(as_f32(q));
  Tensor out = empty_f32({batch, q_heads, q_len, v_dim}, q.device());
  Tensor lse = empty_f32({batch, q_heads, q_len}, q.device());
  // Keys and values held in bf16 (a KV cache on the bf16 path) are read as they are, not widened
  // into a copy, where the backend can and no gradient is asked for.
  const auto bf16_kv = backend::kernels(q.device()).attention_forward_bf16_kv;
  if (!recording && bf16_kv != nullptr && k.dtype() == DType::bf16 && v.dtype() == DType::bf16) {
    const auto [kb, k_stride] = kernel_heads(k, recording, true);
    const auto [vb, v_stride] = kernel_heads(v, recording, true);
    g.k_head_stride = k_stride;
    g.v_head_stride = v_stride;
    bf16_kv(f32(qf), kb.data<std::uint16_t>(), vb.data<std::uint16_t>(), m.defined() ? f32(m) : nullptr, f32(out),
            f32(lse), g);
    return cast_raw(out, q.dtype());
  }
  const auto [kf, k_stride] = kernel_heads(k, recording);
  const auto [vf, v_stride] = kernel_heads(v, recording);
  g.k_head_stride = k_stride;
  g.v_head_stride = v_stride;
  LORACPP_KERNEL(q.device(), attention_forward)(f32(qf), f32(kf), f32(vf), m.defined() ? f32(m) : nullptr, f32(out),
                                               f32(lse), g);
  // The backward needs the output: its own handle on the storage, since holding the recorded
  // output itself would tie it to its own node and leak the graph.
  const Tensor saved_out = alias(out);
  return record(OpId::attention, cast_raw(out, q.dtype()), {q, k, v},
                [qf, kf, vf, m, saved_out, lse, g](const Node& node, const Tensor& grad) {
                  const Tensor dout = contiguous_raw(as_f32(grad));
                  Tensor dq = empty_f32(qf.shape(), qf.device()), dk = empty_f32(kf.shape(), kf.device()),
                         dv = empty_f32(vf.shape(), vf.device());
                  LORACPP_KERNEL(qf.device(), attention_backward)(f32(qf), f32(kf), f32(vf),
                                                                  m.defined() ? f32(m) : nullptr, f32(saved_out),
                                                                  f32(lse), f32(dout), f32(dq), f32(dk), f32(dv), g);
                  return std::vector<Tensor>{node.needs_grad(0) ? cast_raw(dq, node.inputs[0].dtype()) : Tensor(),
                                             node.needs_grad(1) ? cast_raw(dk, node.inputs[1].dtype()) : Tensor(),
                                             node.needs_grad(2) ? cast_raw(dv, node.inputs[2].dtype()) : Tensor()};
                });
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options) {
  trace_op(OpId::attention);
  constexpr std::string_view op = "attention";
  for (const auto* t : {&q, &k, &v}) {
    require_floating(op, *t, "q, k and v");
    require_rank(op, *t, 4, "q, k and v");
  }
  require_same_dtype(op, k, v);  // q may differ: a KV cache may be held in another dtype than q
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
  const Shape full = {batch, q_heads, q_len, kv_len};
  if (options.mask.defined()) {
    require_floating(op, options.mask, "mask");
    require_same_dtype(op, q, options.mask);
    check(options.mask.dim() <= 4 && broadcast_shapes(options.mask.shape(), full, op) == full, op,
          "mask {} must broadcast to [batch, q_heads, q_len, kv_len] = {}", shape_str(options.mask.shape()),
          shape_str(full));
  }
  if (fused_kernel_fits(q.device(), head_dim, v_dim, options.bf16_products))
    return fused_attention(q, k, v, options.mask, scale_value, options.causal, options.bf16_products);

  // Composed from products, which take one dtype: keys and values held in another are converted.
  if (k.dtype() != q.dtype())
    return scaled_dot_product_attention(q, to_dtype(k, q.dtype()), to_dtype(v, q.dtype()), options);
  // Query heads h*group .. h*group+group-1 share key/value head h: fold the group into the rows.
  const Tensor qg = reshape(q, {batch, kv_heads, group * q_len, head_dim});
  Tensor scores = scale(matmul(qg, transpose(k, -1, -2)), scale_value);  // [b, kvh, group*q_len, kv_len]
  const bool masked = options.causal || options.mask.defined();
  if (masked) {
    scores = reshape(scores, full);
    if (options.causal) scores = add(scores, causal_mask(q_len, kv_len, q.dtype(), q.device()));
    if (options.mask.defined()) scores = add(scores, options.mask);
    scores = reshape(scores, {batch, kv_heads, group * q_len, kv_len});
  }
  const Tensor probs = softmax(scores, -1);
  return reshape(matmul(probs, v), {batch, q_heads, q_len, v_dim});
}

}  // namespace loracpp::ops
