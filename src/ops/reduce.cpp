// Reductions: sum, mean, sum_to.
#include <algorithm>
#include <numeric>

#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {

struct Reduction {
  std::vector<bool> reduced;  // per input dim
  Shape kept_shape;           // keepdim=true shape
  Shape out_shape;            // the shape asked for
  std::int64_t count = 1;     // elements summed per output
};

Reduction plan(std::string_view op, const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  Reduction r;
  r.reduced.assign(static_cast<std::size_t>(x.dim()), false);
  for (auto d : dims) {
    const auto k = static_cast<std::size_t>(normalize_dim(d, x.dim(), op));
    check(!r.reduced[k], op, "dim {} listed twice", d);
    r.reduced[k] = true;
  }
  for (std::size_t k = 0; k < r.reduced.size(); ++k) {
    r.kept_shape.push_back(r.reduced[k] ? 1 : x.shape()[k]);
    if (r.reduced[k]) r.count *= x.shape()[k];
    if (!r.reduced[k] || keepdim) r.out_shape.push_back(r.reduced[k] ? 1 : x.shape()[k]);
  }
  return r;
}

// Sums the reduced dims: moves them last, makes that layout dense, and sums rows.
Tensor sum_raw(const Tensor& x, const Reduction& r) {
  Shape order;
  for (std::size_t k = 0; k < r.reduced.size(); ++k)
    if (!r.reduced[k]) order.push_back(static_cast<std::int64_t>(k));
  for (std::size_t k = 0; k < r.reduced.size(); ++k)
    if (r.reduced[k]) order.push_back(static_cast<std::int64_t>(k));
  Shape shape, strides;
  for (auto k : order) {
    shape.push_back(x.shape()[static_cast<std::size_t>(k)]);
    strides.push_back(x.strides()[static_cast<std::size_t>(k)]);
  }
  const Tensor moved = as_f32(x.as_strided(shape, strides, x.byte_offset()));
  Tensor out = empty_f32(r.out_shape, x.device());
  const std::int64_t rows = shape_numel(r.out_shape);
  LORACPP_KERNEL(x.device(), sum_rows)(f32(moved), f32(out), rows, r.count);
  return cast_raw(out, x.dtype());
}

Tensor reduce(OpId id, const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim, bool average) {
  const auto name = op_name(id);
  require_floating(name, x, "input");
  const Reduction r = plan(name, x, dims, keepdim);
  Tensor out = sum_raw(x, r);
  const float factor = average ? 1.0f / static_cast<float>(std::max<std::int64_t>(r.count, 1)) : 1.0f;
  if (average) {
    Tensor of = as_f32(out);
    Tensor scaled = empty_f32(of.shape(), of.device());
    LORACPP_KERNEL(x.device(), scale)(f32(of), factor, f32(scaled), of.numel());
    out = cast_raw(scaled, x.dtype());
  }
  return record(id, out, {x}, [r, factor](const Node& n, const Tensor& g) {
    Tensor expanded = broadcast_to(reshape(g, r.kept_shape), n.inputs[0].shape());
    return std::vector<Tensor>{factor == 1.0f ? contiguous_raw(expanded) : scale(expanded, factor)};
  });
}

std::vector<std::int64_t> all_dims(const Tensor& x) {
  std::vector<std::int64_t> dims(static_cast<std::size_t>(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  return dims;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  trace_op(OpId::sum);
  return reduce(OpId::sum, x, dims, keepdim, false);
}
Tensor sum(const Tensor& x) { return sum(x, all_dims(x), false); }

Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  trace_op(OpId::mean);
  return reduce(OpId::mean, x, dims, keepdim, true);
}
Tensor mean(const Tensor& x) { return mean(x, all_dims(x), false); }

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  check(x.shape().size() >= shape.size(), "sum_to", "cannot sum {} down to {}", shape_str(x.shape()),
        shape_str(shape));
  const std::size_t lead = x.shape().size() - shape.size();
  std::vector<std::int64_t> dims;
  for (std::size_t k = 0; k < x.shape().size(); ++k) {
    if (k < lead) {
      dims.push_back(static_cast<std::int64_t>(k));
      continue;
    }
    const std::int64_t target = shape[k - lead];
    check(target == x.shape()[k] || target == 1, "sum_to", "cannot sum {} down to {}", shape_str(x.shape()),
          shape_str(shape));
    if (target == 1 && x.shape()[k] != 1) dims.push_back(static_cast<std::int64_t>(k));
  }
  return reshape(sum(x, dims, true), shape);
}

}  // namespace loracpp::ops
