// Softmax along one dim.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {
// Softmax over the last dim of a tensor; y is kept f32 for the backward pass.
Tensor softmax_last(const Tensor& x, Tensor& y_f32) {
  const std::int64_t cols = x.size(-1), rows = x.numel() / std::max<std::int64_t>(cols, 1);
  const Tensor xf = as_f32(x);
  y_f32 = empty_f32(x.shape(), x.device());
  LORACPP_KERNEL(x.device(), softmax_forward)(f32(xf), f32(y_f32), rows, cols);
  return cast_raw(y_f32, x.dtype());
}
}  // namespace

Tensor softmax(const Tensor& x, std::int64_t dim) {
  trace_op(OpId::softmax);
  require_floating("softmax", x, "input");
  check(x.dim() >= 1, "softmax", "input must have rank >= 1");
  const std::int64_t d = normalize_dim(dim, x.dim(), "softmax");
  // Another dim is moved last (a raw copy, not recorded) and moved back afterwards.
  const bool moved = d != x.dim() - 1;
  Tensor y_f32, y;
  {
    autograd::NoGradGuard raw;
    y = softmax_last(moved ? contiguous_raw(transpose(x, d, -1)) : x, y_f32);
    if (moved) y = contiguous_raw(transpose(y, d, -1));
  }
  // The backward pass needs y; it keeps its own handle on y's storage, because holding the output
  // tensor itself would tie the output to its own node and leak the graph.
  const Tensor saved = y_f32.as_strided(y_f32.shape(), y_f32.strides(), y_f32.byte_offset());
  return record(OpId::softmax, y, {x}, [saved, d, moved](const Node& node, const Tensor& g) {
    const Tensor gf = as_f32(moved ? transpose(g, d, -1) : g);
    const std::int64_t cols = gf.size(-1), rows = gf.numel() / std::max<std::int64_t>(cols, 1);
    Tensor dx = empty_f32(gf.shape(), g.device());
    LORACPP_KERNEL(g.device(), softmax_backward)(f32(saved), f32(gf), f32(dx), rows, cols);
    return std::vector<Tensor>{cast_raw(moved ? contiguous_raw(transpose(dx, d, -1)) : dx, node.inputs[0].dtype())};
  });
}

}  // namespace loracpp::ops
