// Normalisation over the last dim: RMSNorm and LayerNorm.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {
void check_param(std::string_view op, const Tensor& x, const Tensor& p, std::string_view role) {
  if (!p.defined()) return;
  require_floating(op, p, role);
  require_same_dtype(op, x, p);
  require_same_device(op, {x, p});
  check(p.dim() == 1 && p.size(0) == x.size(-1), op, "{} must be [{}] to match the input's last dim, got {}", role,
        x.size(-1), shape_str(p.shape()));
}
}  // namespace

// x [..., dim], weight [dim] -> [..., dim]
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  trace_op(OpId::rms_norm);
  require_floating("rms_norm", x, "input");
  check(x.dim() >= 1, "rms_norm", "input must have rank >= 1");
  check(weight.defined(), "rms_norm", "weight is undefined");
  check_param("rms_norm", x, weight, "weight");
  const std::int64_t dim = x.size(-1), rows = x.numel() / std::max<std::int64_t>(dim, 1);
  const Tensor xf = as_f32(x), wf = as_f32(weight);
  Tensor y = empty_f32(x.shape(), x.device());
  Tensor rstd = zeros_f32({rows}, x.device());
  LORACPP_KERNEL(x.device(), rms_norm_forward)(f32(xf), f32(wf), f32(y), f32(rstd), rows, dim, eps);
  return record(OpId::rms_norm, cast_raw(y, x.dtype()), {x, weight},
                [xf, wf, rstd, rows, dim](const Node& node, const Tensor& g) {
                  const Tensor gf = as_f32(g);
                  Tensor dx = node.needs_grad(0) ? empty_f32(xf.shape(), g.device()) : Tensor();
                  Tensor dw = node.needs_grad(1) ? zeros_f32({dim}, g.device()) : Tensor();
                  LORACPP_KERNEL(g.device(), rms_norm_backward)(f32(xf), f32(wf), f32(rstd), f32(gf),
                                                                dx.defined() ? f32(dx) : nullptr,
                                                                dw.defined() ? f32(dw) : nullptr, rows, dim);
                  return std::vector<Tensor>{dx.defined() ? cast_raw(dx, node.inputs[0].dtype()) : Tensor(),
                                             dw.defined() ? cast_raw(dw, node.inputs[1].dtype()) : Tensor()};
                });
}

// x [..., dim], weight [dim] or undefined, bias [dim] or undefined -> [..., dim]
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  trace_op(OpId::layer_norm);
  require_floating("layer_norm", x, "input");
  check(x.dim() >= 1, "layer_norm", "input must have rank >= 1");
  check_param("layer_norm", x, weight, "weight");
  check_param("layer_norm", x, bias, "bias");
  const std::int64_t dim = x.size(-1), rows = x.numel() / std::max<std::int64_t>(dim, 1);
  const Tensor xf = as_f32(x);
  const Tensor wf = weight.defined() ? as_f32(weight) : Tensor();
  const Tensor bf = bias.defined() ? as_f32(bias) : Tensor();
  Tensor y = zeros_f32(x.shape(), x.device());
  Tensor mu = zeros_f32({rows}, x.device()), rstd = zeros_f32({rows}, x.device());
  LORACPP_KERNEL(x.device(), layer_norm_forward)(f32(xf), wf.defined() ? f32(wf) : nullptr,
                                                 bf.defined() ? f32(bf) : nullptr, f32(y), f32(mu), f32(rstd), rows,
                                                 dim, eps);
  return record(OpId::layer_norm, cast_raw(y, x.dtype()), {x, weight, bias},
                [xf, wf, mu, rstd, rows, dim](const Node& node, const Tensor& g) {
                  const Tensor gf = as_f32(g);
                  Tensor dx = node.needs_grad(0) ? zeros_f32(xf.shape(), g.device()) : Tensor();
                  Tensor dw = node.needs_grad(1) ? zeros_f32({dim}, g.device()) : Tensor();
                  Tensor db = node.needs_grad(2) ? zeros_f32({dim}, g.device()) : Tensor();
                  LORACPP_KERNEL(g.device(), layer_norm_backward)(
                      f32(xf), wf.defined() ? f32(wf) : nullptr, f32(mu), f32(rstd), f32(gf),
                      dx.defined() ? f32(dx) : nullptr, dw.defined() ? f32(dw) : nullptr,
                      db.defined() ? f32(db) : nullptr, rows, dim);
                  std::vector<Tensor> grads{dx, dw, db};
                  for (std::size_t i = 0; i < grads.size(); ++i)
                    if (grads[i].defined()) grads[i] = cast_raw(grads[i], node.inputs[i].dtype());
                  return grads;
                });
}

}  // namespace loracpp::ops
