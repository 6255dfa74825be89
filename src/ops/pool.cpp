// Max and average pooling over NCHW planes.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {
backend::Pool2dGeometry geometry(const Tensor& x, const Pool2dOptions& o, std::string_view op) {
  require_floating(op, x, "input");
  require_rank(op, x, 4, "input");
  const std::int64_t stride_h = o.stride_h ? o.stride_h : o.kernel_h, stride_w = o.stride_w ? o.stride_w : o.kernel_w;
  check(o.kernel_h > 0 && o.kernel_w > 0 && stride_h > 0 && stride_w > 0, op,
        "kernel and stride must be positive, got kernel {}x{} stride {}x{}", o.kernel_h, o.kernel_w, stride_h,
        stride_w);
  check(o.pad_h >= 0 && o.pad_w >= 0 && 2 * o.pad_h <= o.kernel_h && 2 * o.pad_w <= o.kernel_w, op,
        "padding must be between 0 and half the kernel, got {}x{} for kernel {}x{}", o.pad_h, o.pad_w, o.kernel_h,
        o.kernel_w);
  const std::int64_t h = x.size(2), w = x.size(3);
  check(h + 2 * o.pad_h >= o.kernel_h && w + 2 * o.pad_w >= o.kernel_w, op,
        "kernel {}x{} is larger than the padded input {}x{}", o.kernel_h, o.kernel_w, h + 2 * o.pad_h, w + 2 * o.pad_w);
  return {x.size(0) * x.size(1), h, w, o.kernel_h, o.kernel_w, stride_h, stride_w, o.pad_h, o.pad_w,
          (h + 2 * o.pad_h - o.kernel_h) / stride_h + 1, (w + 2 * o.pad_w - o.kernel_w) / stride_w + 1};
}
}  // namespace

// x [n, c, h, w] -> [n, c, out_h, out_w]
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  trace_op(OpId::max_pool2d);
  const auto g = geometry(x, options, "max_pool2d");
  const Tensor xf = as_f32(x);
  Tensor y = zeros_f32({x.size(0), x.size(1), g.out_h, g.out_w}, x.device());
  Tensor argmax = Tensor::zeros(y.shape(), DType::i64, x.device());
  LORACPP_KERNEL(x.device(), max_pool2d_forward)(f32(xf), f32(y), argmax.mutable_data<std::int64_t>(), g);
  return record(OpId::max_pool2d, cast_raw(y, x.dtype()), {x}, [g, argmax](const Node& node, const Tensor& grad) {
    const Tensor gf = as_f32(grad);
    Tensor dx = zeros_f32(node.inputs[0].shape(), grad.device());
    LORACPP_KERNEL(grad.device(), max_pool2d_backward)(f32(gf), argmax.data<std::int64_t>(), f32(dx), g);
    return std::vector<Tensor>{cast_raw(dx, node.inputs[0].dtype())};
  });
}

// x [n, c, h, w] -> [n, c, out_h, out_w]
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options) {
  trace_op(OpId::avg_pool2d);
  const auto g = geometry(x, options, "avg_pool2d");
  const Tensor xf = as_f32(x);
  Tensor y = zeros_f32({x.size(0), x.size(1), g.out_h, g.out_w}, x.device());
  LORACPP_KERNEL(x.device(), avg_pool2d_forward)(f32(xf), f32(y), g);
  return record(OpId::avg_pool2d, cast_raw(y, x.dtype()), {x}, [g](const Node& node, const Tensor& grad) {
    const Tensor gf = as_f32(grad);
    Tensor dx = zeros_f32(node.inputs[0].shape(), grad.device());
    LORACPP_KERNEL(grad.device(), avg_pool2d_backward)(f32(gf), f32(dx), g);
    return std::vector<Tensor>{cast_raw(dx, node.inputs[0].dtype())};
  });
}

}  // namespace loracpp::ops
