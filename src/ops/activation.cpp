// Activations and dropout: SiLU, GELU (erf and tanh), SwiGLU, dropout.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;
using backend::UnaryOp;

namespace {
Tensor unary(OpId id, UnaryOp op, const Tensor& x) {
  require_floating(op_name(id), x, "input");
  const Tensor xf = as_f32(x);
  Tensor y = empty_f32(x.shape(), x.device());
  LORACPP_KERNEL(x.device(), unary_forward)(op, f32(xf), f32(y), x.numel());
  return record(id, cast_raw(y, x.dtype()), {x}, [op, xf](const Node& node, const Tensor& g) {
    const Tensor gf = as_f32(g);
    Tensor dx = empty_f32(xf.shape(), g.device());
    LORACPP_KERNEL(g.device(), unary_backward)(op, f32(xf), f32(gf), f32(dx), xf.numel());
    return std::vector<Tensor>{cast_raw(dx, node.inputs[0].dtype())};
  });
}
}  // namespace

Tensor silu(const Tensor& x) {
  trace_op(OpId::silu);
  return unary(OpId::silu, UnaryOp::silu, x);
}

Tensor gelu(const Tensor& x, GeluApproximation approximation) {
  trace_op(OpId::gelu);
  return unary(OpId::gelu, approximation == GeluApproximation::tanh ? UnaryOp::gelu_tanh : UnaryOp::gelu_erf, x);
}

// gate, up [...] -> silu(gate) * up
Tensor swiglu(const Tensor& gate, const Tensor& up) {
  trace_op(OpId::swiglu);
  require_floating("swiglu", gate, "gate");
  require_floating("swiglu", up, "up");
  require_same_dtype("swiglu", gate, up);
  require_same_device("swiglu", {gate, up});
  check(gate.shape() == up.shape(), "swiglu", "gate {} and up {} must have one shape", shape_str(gate.shape()),
        shape_str(up.shape()));
  const Tensor gf = as_f32(gate), uf = as_f32(up);
  Tensor y = empty_f32(gate.shape(), gate.device());
  LORACPP_KERNEL(gate.device(), swiglu_forward)(f32(gf), f32(uf), f32(y), gate.numel());
  return record(OpId::swiglu, cast_raw(y, gate.dtype()), {gate, up}, [gf, uf](const Node& node, const Tensor& g) {
    const Tensor dy = as_f32(g);
    // Gradients rounded as they are written where every input that needs one is made by a node
    // that multiplies it in bf16 (the gate and up projections of the bf16 LoRA path).
    bool bf16 = node.needs_grad(0) || node.needs_grad(1);
    for (std::size_t i = 0; i < 2; ++i)
      if (node.needs_grad(i)) bf16 = bf16 && node.inputs[i].grad_fn() && node.inputs[i].grad_fn()->takes_bf16_grad;
    const DType grad_dtype = bf16 ? DType::bf16 : DType::f32;
    Tensor dgate = node.needs_grad(0) ? Tensor::empty(gf.shape(), grad_dtype, g.device()) : Tensor();
    Tensor dup = node.needs_grad(1) ? Tensor::empty(uf.shape(), grad_dtype, g.device()) : Tensor();
    if (bf16) {
      auto out = [](Tensor& t) { return t.defined() ? t.mutable_data<std::uint16_t>() : nullptr; };
      LORACPP_KERNEL(g.device(), swiglu_backward_bf16)(f32(gf), f32(uf), f32(dy), out(dgate), out(dup), gf.numel());
      return std::vector<Tensor>{dgate, dup};
    }
    LORACPP_KERNEL(g.device(), swiglu_backward)(f32(gf), f32(uf), f32(dy), dgate.defined() ? f32(dgate) : nullptr,
                                                dup.defined() ? f32(dup) : nullptr, gf.numel());
    return std::vector<Tensor>{dgate.defined() ? cast_raw(dgate, node.inputs[0].dtype()) : Tensor(),
                               dup.defined() ? cast_raw(dup, node.inputs[1].dtype()) : Tensor()};
  });
}

Tensor dropout(const Tensor& x, float p, std::uint64_t seed, bool training) {
  trace_op(OpId::dropout);
  require_floating("dropout", x, "input");
  check(p >= 0.0f && p < 1.0f, "dropout", "probability must be in [0, 1), got {}", p);
  if (!training || p == 0.0f) return x;
  Tensor mask = empty_f32(x.shape(), x.device());
  LORACPP_KERNEL(x.device(), dropout_mask)(f32(mask), x.numel(), p, seed);
  return mul(x, cast_raw(mask, x.dtype()));
}

}  // namespace loracpp::ops
