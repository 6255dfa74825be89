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
  const Tensor index = checked_ids("embedding", ids, vocab).index;
  // Rows are gathered in the table's dtype: a bf16 or block table is never widened as a whole (a
  // q8_0 or q4_0 row moves as its blocks).
  const Tensor table = contiguous_raw(weight);
  Shape shape = ids.shape();
  shape.push_back(dim);
  Tensor out = Tensor::empty(shape, weight.dtype(), weight.device());  // (widened below for blocks)
  const std::int64_t block = dtype_block(weight.dtype());
  check(dim % block == 0, "embedding", "a {} table's rows hold whole blocks of {} values, not {}",
        dtype_name(weight.dtype()), block, dim);
  LORACPP_KERNEL(weight.device(), embedding_forward)(table.raw_data(), index.data<std::int64_t>(),
                                                     out.raw_mutable_data(), index.numel(), dim / block,
                                                     dtype_bytes(weight.dtype(), block));
  if (block != 1) out = cast_raw(out, DType::f32);  // blocks are no activation: the rows widen at once
  // Only the table can have a gradient; ids are integers.
  return record(OpId::embedding, out, {weight},
                [index, vocab, dim](const Node& node, const Tensor& g) {
                  const Tensor gf = as_f32(g);
                  Tensor dw = zeros_f32({vocab, dim}, g.device());
                  LORACPP_KERNEL(g.device(), embedding_backward)(f32(gf), index.data<std::int64_t>(), f32(dw),
                                                                 index.numel(), dim);
                  return std::vector<Tensor>{cast_raw(dw, node.inputs[0].dtype())};
                });
}

}  // namespace loracpp::ops
