// Broadcasting arithmetic: add, sub, mul, div, scale.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;
using backend::BinaryOp;

namespace {

// Strides that read a contiguous tensor of shape `from` as if it had the broadcast shape `to`.
Shape broadcast_strides(const Shape& from, const Shape& to) {
  const Shape dense = contiguous_strides(from);
  Shape strides(to.size(), 0);
  const std::size_t lead = to.size() - from.size();
  for (std::size_t i = 0; i < from.size(); ++i) strides[lead + i] = from[i] == 1 ? 0 : dense[i];
  return strides;
}

// out = a op b over the broadcast shape, computed in f32 and returned in the operands' dtype.
Tensor binary_raw(std::string_view name, BinaryOp op, const Tensor& a, const Tensor& b) {
  require_floating(name, a, "a");
  require_floating(name, b, "b");
  require_same_dtype(name, a, b);
  require_same_device(name, {a, b});
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  const Tensor af = as_f32(a), bf = as_f32(b);
  Tensor out = empty_f32(shape, a.device());
  const Shape as = broadcast_strides(a.shape(), shape), bs = broadcast_strides(b.shape(), shape);
  LORACPP_KERNEL(a.device(), binary)(op, f32(af), as.data(), f32(bf), bs.data(), f32(out), shape.data(),
                                     static_cast<int>(shape.size()));
  return cast_raw(out, a.dtype());
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  trace_op(OpId::add);
  return record(OpId::add, binary_raw("add", BinaryOp::add, a, b), {a, b}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(g, n.inputs[0].shape()) : Tensor(),
                               n.needs_grad(1) ? sum_to(g, n.inputs[1].shape()) : Tensor()};
  });
}

void add_into(Tensor& acc, const Tensor& x) {
  constexpr std::string_view op = "add_into";
  check(acc.defined() && acc.dtype() == DType::f32 && acc.is_contiguous(), op,
        "the accumulator must be a contiguous f32 tensor");
  check(x.defined() && x.shape() == acc.shape(), op, "x must have the accumulator's shape {}, got {}",
        shape_str(acc.shape()), shape_str(x));
  require_same_device(op, {acc, x});
  const Tensor xf = as_f32(x);
  const Shape strides = contiguous_strides(acc.shape());
  float* out = acc.mutable_data<float>();
  LORACPP_KERNEL(acc.device(), binary)(BinaryOp::add, out, strides.data(), f32(xf), xf.strides().data(), out,
                                       acc.shape().data(), static_cast<int>(acc.dim()));
}

Tensor sub(const Tensor& a, const Tensor& b) {
  trace_op(OpId::sub);
  return record(OpId::sub, binary_raw("sub", BinaryOp::sub, a, b), {a, b}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(g, n.inputs[0].shape()) : Tensor(),
                               n.needs_grad(1) ? sum_to(scale(g, -1.0f), n.inputs[1].shape()) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  trace_op(OpId::mul);
  return record(OpId::mul, binary_raw("mul", BinaryOp::mul, a, b), {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &x = n.inputs[0], &y = n.inputs[1];
    return std::vector<Tensor>{n.needs_grad(0) ? sum_to(mul(g, y), x.shape()) : Tensor(),
                               n.needs_grad(1) ? sum_to(mul(g, x), y.shape()) : Tensor()};
  }, BackwardReads::inputs);
}

Tensor div(const Tensor& a, const Tensor& b) {
  trace_op(OpId::div);
  return record(OpId::div, binary_raw("div", BinaryOp::div, a, b), {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &x = n.inputs[0], &y = n.inputs[1];
    // d(x/y)/dy = -x / y^2
    return std::vector<Tensor>{
        n.needs_grad(0) ? sum_to(div(g, y), x.shape()) : Tensor(),
        n.needs_grad(1) ? sum_to(scale(div(mul(g, x), mul(y, y)), -1.0f), y.shape()) : Tensor()};
  }, BackwardReads::inputs);
}

Tensor scale(const Tensor& x, float alpha) {
  trace_op(OpId::scale);
  require_floating("scale", x, "input");
  const Tensor xf = as_f32(x);
  Tensor out = empty_f32(x.shape(), x.device());
  LORACPP_KERNEL(x.device(), scale)(f32(xf), alpha, f32(out), x.numel());
  return record(OpId::scale, cast_raw(out, x.dtype()), {x},
                [alpha](const Node&, const Tensor& g) { return std::vector<Tensor>{scale(g, alpha)}; });
}

}  // namespace loracpp::ops
