// Embedding lookup: rows of a table by integer id.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  trace_op(OpId::embedding);
  require_floating("embedding", weight, "weight");
  require_rank("embedding", weight, 2, "weight");
  require_same_device("embedding", {weight, ids});
  const std::int64_t vocab = weight.size(0), dim = weight.size(1);
  const Tensor index = checked_ids("embedding", ids, vocab);
  const Tensor wf = as_f32(weight);
  Shape shape = ids.shape();
  shape.push_back(dim);
  Tensor out = empty_f32(shape, weight.device());
  LORACPP_KERNEL(weight.device(), embedding_forward)(f32(wf), index.data<std::int64_t>(), f32(out), index.numel(),
                                                     dim);
  // Only the table can have a gradient; ids are integers.
  return record(OpId::embedding, cast_raw(out, weight.dtype()), {weight},
                [index, vocab, dim](const Node& node, const Tensor& g) {
                  const Tensor gf = as_f32(g);
                  Tensor dw = zeros_f32({vocab, dim}, g.device());
                  LORACPP_KERNEL(g.device(), embedding_backward)(f32(gf), index.data<std::int64_t>(), f32(dw),
                                                                 index.numel(), dim);
                  return std::vector<Tensor>{cast_raw(dw, node.inputs[0].dtype())};
                });
}

}  // namespace loracpp::ops
