// 2-D convolution as im2col + GEMM.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {
backend::Conv2dGeometry geometry(const Tensor& x, std::int64_t kernel_h, std::int64_t kernel_w,
                                 const Conv2dOptions& o, std::string_view op) {
  check(kernel_h > 0 && kernel_w > 0, op, "kernel must be positive, got {}x{}", kernel_h, kernel_w);
  check(o.stride_h > 0 && o.stride_w > 0, op, "stride must be positive, got {}x{}", o.stride_h, o.stride_w);
  check(o.pad_h >= 0 && o.pad_w >= 0, op, "padding must be >= 0, got {}x{}", o.pad_h, o.pad_w);
  const std::int64_t h = x.size(2), w = x.size(3);
  const std::int64_t out_h = (h + 2 * o.pad_h - kernel_h) / o.stride_h + 1;
  const std::int64_t out_w = (w + 2 * o.pad_w - kernel_w) / o.stride_w + 1;
  check(h + 2 * o.pad_h >= kernel_h && w + 2 * o.pad_w >= kernel_w, op,
        "kernel {}x{} is larger than the padded input {}x{}", kernel_h, kernel_w, h + 2 * o.pad_h, w + 2 * o.pad_w);
  return {x.size(1), h, w, kernel_h, kernel_w, o.stride_h, o.stride_w, o.pad_h, o.pad_w, out_h, out_w};
}
}  // namespace

// x [n, c, h, w] -> [n, c*kh*kw, out_h*out_w]
Tensor im2col(const Tensor& x, std::int64_t kernel_h, std::int64_t kernel_w, const Conv2dOptions& options) {
  trace_op(OpId::im2col);
  require_floating("im2col", x, "input");
  require_rank("im2col", x, 4, "input");
  const auto g = geometry(x, kernel_h, kernel_w, options, "im2col");
  const std::int64_t n = x.size(0), rows = g.channels * kernel_h * kernel_w, cols = g.out_h * g.out_w;
  const std::int64_t image = g.channels * g.height * g.width;
  const Tensor xf = as_f32(x);
  Tensor out = zeros_f32({n, rows, cols}, x.device());
  auto kernel = LORACPP_KERNEL(x.device(), im2col);
  for (std::int64_t i = 0; i < n; ++i) kernel(f32(xf) + i * image, f32(out) + i * rows * cols, g);
  return record(OpId::im2col, cast_raw(out, x.dtype()), {x}, [g, n, rows, cols, image](const Node& node,
                                                                                        const Tensor& grad) {
    const Tensor gf = as_f32(grad);
    Tensor dx = zeros_f32(node.inputs[0].shape(), grad.device());
    auto back = LORACPP_KERNEL(grad.device(), col2im);
    for (std::int64_t i = 0; i < n; ++i) back(f32(gf) + i * rows * cols, f32(dx) + i * image, g);
    return std::vector<Tensor>{cast_raw(dx, node.inputs[0].dtype())};
  });
}

// x [n, c, h, w], weight [o, c, kh, kw], bias [o] -> [n, o, out_h, out_w]
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& options) {
  trace_op(OpId::conv2d);
  require_floating("conv2d", x, "input");
  require_rank("conv2d", x, 4, "input");
  require_floating("conv2d", weight, "weight");
  require_rank("conv2d", weight, 4, "weight");
  check(weight.size(1) == x.size(1), "conv2d", "weight {} expects {} input channels, input {} has {}",
        shape_str(weight.shape()), weight.size(1), shape_str(x.shape()), x.size(1));
  const std::int64_t out_channels = weight.size(0);
  const auto g = geometry(x, weight.size(2), weight.size(3), options, "conv2d");
  const Tensor cols = im2col(x, weight.size(2), weight.size(3), options);  // [n, c*kh*kw, out_h*out_w]
  Tensor y = matmul(reshape(weight, {out_channels, -1}), cols);             // [n, o, out_h*out_w]
  if (bias.defined()) {
    check(bias.dim() == 1 && bias.size(0) == out_channels, "conv2d", "bias must be [{}], got {}", out_channels,
          shape_str(bias.shape()));
    y = add(y, reshape(bias, {out_channels, 1}));
  }
  return reshape(y, {x.size(0), out_channels, g.out_h, g.out_w});
}

}  // namespace loracpp::ops
