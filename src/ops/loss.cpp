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
  const Tensor ids = checked_ids("cross_entropy", targets, vocab, ignore_index);
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < rows; ++i) count += ids.data<std::int64_t>()[i] != ignore_index;
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

}  // namespace loracpp::ops
