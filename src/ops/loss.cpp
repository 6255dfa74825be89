// Cross-entropy over the last dim with an ignore index.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

// logits [..., vocab], targets [...] -> [] mean over targets != ignore_index
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index) {
  trace_op(OpId::cross_entropy);
  require_floating("cross_entropy", logits, "logits");
  require_integer("cross_entropy", targets, "targets");
  require_same_device("cross_entropy", {logits, targets});
  check(logits.dim() >= 1, "cross_entropy", "logits must have rank >= 1");
  Shape expected(logits.shape().begin(), logits.shape().end() - 1);
  check(targets.shape() == expected, "cross_entropy", "targets must have shape {} for logits {}, got {}",
        shape_str(expected), shape_str(logits.shape()), shape_str(targets.shape()));
  const std::int64_t vocab = logits.size(-1), rows = shape_numel(expected);
  const CheckedIds checked = checked_ids("cross_entropy", targets, vocab, ignore_index);
  const Tensor ids = checked.index;
  const std::int64_t count = checked.counted;
  const Tensor lf = as_f32(logits);
  Tensor losses = zeros_f32({rows}, logits.device()), lse = zeros_f32({rows}, logits.device());
  LORACPP_KERNEL(logits.device(), cross_entropy_forward)(f32(lf), ids.data<std::int64_t>(), f32(losses), f32(lse),
                                                         rows, vocab, ignore_index);
  Tensor total = zeros_f32({}, logits.device());
  LORACPP_KERNEL(logits.device(), sum_rows)(f32(losses), f32(total), 1, rows);
  // A batch whose targets are all ignored has loss 0 (and zero gradients) rather than NaN.
  const float inv_count = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;
  Tensor loss = zeros_f32({}, logits.device());
  LORACPP_KERNEL(logits.device(), scale)(f32(total), inv_count, f32(loss), 1);
  return record(OpId::cross_entropy, cast_raw(loss, logits.dtype()), {logits},
                [lf, ids, lse, inv_count, rows, vocab, ignore_index](const Node& node, const Tensor& g) {
                  Tensor dl = empty_f32(lf.shape(), lf.device());
                  LORACPP_KERNEL(lf.device(), cross_entropy_backward)(f32(lf), ids.data<std::int64_t>(), f32(lse),
                                                                      g.item() * inv_count, f32(dl), rows, vocab,
                                                                      ignore_index);
                  return std::vector<Tensor>{cast_raw(dl, node.inputs[0].dtype())};
                });
}

std::int64_t default_cross_entropy_chunk(std::int64_t rows, std::int64_t vocab, std::int64_t in) {
  const std::int64_t v = std::max<std::int64_t>(vocab, 1);
  const std::int64_t for_speed = std::min((std::int64_t{256} << 10) / std::max<std::int64_t>(in, 1), (std::int64_t{32} << 20) / v);
  const std::int64_t most = std::max({std::int64_t{256}, (std::int64_t{8} << 20) / v, for_speed});
  const std::int64_t chunks = std::max<std::int64_t>(1, (rows + most - 1) / most);
  return std::max<std::int64_t>(1, (rows + chunks - 1) / chunks);
}

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, std::int64_t ignore_index,
                            std::int64_t chunk_rows) {
  trace_op(OpId::linear_cross_entropy);
  constexpr std::string_view op = "linear_cross_entropy";
  require_floating(op, x, "input");
  require_floating(op, weight, "weight");
  require_rank(op, weight, 2, "weight");
  require_integer(op, targets, "targets");
  require_same_device(op, {x, weight, targets});
  const std::int64_t vocab = weight.size(0), in = weight.size(1);
  check(x.dim() >= 1 && x.size(-1) == in, op, "input's last dim must equal weight's in_features {}, got {}", in,
        shape_str(x.shape()));
  const Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
  check(targets.shape() == rows_shape, op, "targets must have shape {} for input {}, got {}", shape_str(rows_shape),
        shape_str(x.shape()), shape_str(targets.shape()));
  check(chunk_rows >= 0, op, "chunk_rows must be >= 0, got {}", chunk_rows);
  const std::int64_t rows = shape_numel(rows_shape);
  const CheckedIds checked = checked_ids(op, targets, vocab, ignore_index);
  const Tensor ids = checked.index;
  const std::int64_t count = checked.counted;
  const float inv_count = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;

  const bool recording = autograd::should_record({x, weight});
  const bool grad_x = recording && x.requires_grad(), grad_w = recording && weight.requires_grad();
  const Tensor xf = as_f32(x);
  const Tensor x2 = xf.as_strided({rows, in}, {in, 1}, xf.byte_offset());
  // bf16 stays bf16; blocks widen to bf16 under Bf16BlockProducts, else to f32.
  const bool bf16 = weight.dtype() == DType::bf16 || (is_block_dtype(weight.dtype()) && bf16_block_products());
  const Tensor w = contiguous_raw(weight.dtype() == DType::bf16 ? weight
                                  : bf16                       ? cast_raw(weight, DType::bf16)
                                                               : as_f32(weight));
  const Tensor wt = w.as_strided({in, vocab}, {1, in}, w.byte_offset());
  const std::int64_t chunk = chunk_rows > 0 ? chunk_rows : default_cross_entropy_chunk(rows, vocab, in);
  const Device device = x.device();
  Tensor losses = zeros_f32({rows}, device), lse = zeros_f32({rows}, device);
  Tensor dx = grad_x ? empty_f32({rows, in}, device) : Tensor();
  Tensor dw = grad_w ? zeros_f32({vocab, in}, device) : Tensor();
  {
    autograd::NoGradGuard no_grad;
    const auto* id = ids.data<std::int64_t>();
    // A frozen bf16 output weight (LoRA's case on the bf16 path): where the backend has the kernel
    // and takes the call, the loss and dx come without a logits buffer at all.
    const auto fused = backend::kernels(device).linear_cross_entropy_bf16;
    const bool done = grad_x && !grad_w && w.dtype() == DType::bf16 && fused != nullptr &&
                      fused(f32(x2), w.data<std::uint16_t>(), id, f32(losses), f32(lse), inv_count, f32(dx), rows,
                            vocab, in, ignore_index);
    for (std::int64_t r0 = 0; r0 < rows && !done; r0 += chunk) {
      const std::int64_t m = std::min(chunk, rows - r0);
      const Tensor xc = x2.as_strided({m, in}, {in, 1}, x2.byte_offset() + static_cast<std::size_t>(r0 * in) * 4);
      Tensor logits = matmul(xc, wt);
      if (grad_x && !grad_w) {
        // A frozen output weight (LoRA's case): one pass per chunk takes the loss and the chunk's
        // gradient of the mean loss for an upstream gradient of 1: in bf16 on the bf16 path, the
        // operand of dx's product (or, where the backend has the kernel, the loss and dx at once,
        // normalised after the product), else in place of the logits. dx's rows are written in
        // place.
        float* dx_rows = f32(dx) + r0 * in;
        const auto input_grad = backend::kernels(device).cross_entropy_bf16_input_grad;
        if (w.dtype() == DType::bf16 && input_grad != nullptr) {
          Tensor exps = Tensor::empty({m, vocab}, DType::bf16, device);
          input_grad(f32(logits), id + r0, f32(losses) + r0, f32(lse) + r0, inv_count, w.data<std::uint16_t>(),
                     exps.mutable_data<std::uint16_t>(), dx_rows, m, vocab, in, ignore_index);
        } else if (w.dtype() == DType::bf16) {
          Tensor g16 = Tensor::empty({m, vocab}, DType::bf16, device);
          LORACPP_KERNEL(device, cross_entropy_with_bf16_grad)(f32(logits), id + r0, f32(losses) + r0, f32(lse) + r0,
                                                               inv_count, g16.mutable_data<std::uint16_t>(), m, vocab,
                                                               ignore_index);
          LORACPP_KERNEL(device, gemm_bf16)(false, m, in, vocab, 1.0f, g16.data<std::uint16_t>(), vocab,
                                            w.data<std::uint16_t>(), in, 0.0f, dx_rows, in);
        } else {
          LORACPP_KERNEL(device, cross_entropy_with_grad)(f32(logits), id + r0, f32(losses) + r0, f32(lse) + r0,
                                                          inv_count, f32(logits), m, vocab, ignore_index);
          LORACPP_KERNEL(device, gemm)(false, false, m, in, vocab, 1.0f, f32(logits), vocab, f32(w), in, 0.0f,
                                       dx_rows, in);
        }
        continue;
      }
      LORACPP_KERNEL(device, cross_entropy_forward)(f32(logits), id + r0, f32(losses) + r0, f32(lse) + r0, m, vocab,
                                                    ignore_index);
      if (!grad_x && !grad_w) continue;
      // The chunk's gradient of the mean loss, for an upstream gradient of 1, over its own logits.
      LORACPP_KERNEL(device, cross_entropy_backward)(f32(logits), id + r0, f32(lse) + r0, inv_count, f32(logits), m,
                                                     vocab, ignore_index);
      if (grad_x) {  // dx's rows of the chunk = its gradient W, written in place
        float* dx_rows = f32(dx) + r0 * in;
        if (w.dtype() == DType::bf16) {
          const Tensor g16 = cast_raw(logits, DType::bf16);
          LORACPP_KERNEL(device, gemm_bf16)(false, m, in, vocab, 1.0f, g16.data<std::uint16_t>(), vocab,
                                            w.data<std::uint16_t>(), in, 0.0f, dx_rows, in);
        } else {
          LORACPP_KERNEL(device, gemm)(false, false, m, in, vocab, 1.0f, f32(logits), vocab, f32(w), in, 0.0f, dx_rows,
                                       in);
        }
      }
      if (grad_w)
        LORACPP_KERNEL(device, gemm)(true, false, vocab, in, m, 1.0f, f32(logits), vocab, f32(xc), in, 1.0f, f32(dw),
                                     in);
    }
  }
  Tensor total = zeros_f32({}, device), loss = zeros_f32({}, device);
  LORACPP_KERNEL(device, sum_rows)(f32(losses), f32(total), 1, rows);
  LORACPP_KERNEL(device, scale)(f32(total), inv_count, f32(loss), 1);
  return record(OpId::linear_cross_entropy, cast_raw(loss, x.dtype()), {x, weight},
                [dx, dw](const Node& node, const Tensor& g) {
                  const float upstream = g.item();
                  std::vector<Tensor> grads(2);
                  if (node.needs_grad(0)) {
                    const Shape& shape = node.inputs[0].shape();
                    const Tensor scaled = scale(dx, upstream);
                    grads[0] = cast_raw(scaled.as_strided(shape, contiguous_strides(shape), scaled.byte_offset()),
                                        node.inputs[0].dtype());
                  }
                  if (node.needs_grad(1)) grads[1] = cast_raw(scale(dw, upstream), node.inputs[1].dtype());
                  return grads;
                });
}

}  // namespace loracpp::ops
