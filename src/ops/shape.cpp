// Layout ops: views where the strides allow, copies otherwise; backward maps the gradient back.
#include <numeric>

#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

Tensor contiguous(const Tensor& x) {
  trace_op(OpId::contiguous);
  Tensor out = x.is_contiguous() ? alias(x) : contiguous_raw(x);
  return record(OpId::contiguous, out, {x}, [](const Node&, const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  trace_op(OpId::to_dtype);
  check(x.defined(), "to_dtype", "input is undefined");
  Tensor out = x.dtype() == dtype ? alias(x) : Tensor();
  if (!out.defined()) {
    Tensor dense = contiguous_raw(x);
    out = Tensor::zeros(x.shape(), dtype, x.device());
    LORACPP_KERNEL(x.device(), convert)(dense.raw_data(), dense.dtype(), out.raw_mutable_data(), dtype, x.numel());
  }
  check(is_floating(dtype) || !x.requires_grad(), "to_dtype",
        "cannot cast a tensor that requires grad to {}: gradients need a floating dtype", dtype_name(dtype));
  const DType from = x.dtype();
  return record(OpId::to_dtype, out, {x},
                [from](const Node&, const Tensor& g) { return std::vector<Tensor>{to_dtype(g, from)}; });
}

Tensor reshape(const Tensor& x, Shape shape) {
  trace_op(OpId::reshape);
  std::int64_t known = 1, inferred = -1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      check(inferred < 0, "reshape", "only one size may be -1, got {}", shape_str(shape));
      inferred = static_cast<std::int64_t>(i);
    } else {
      check(shape[i] >= 0, "reshape", "invalid size {} in {}", shape[i], shape_str(shape));
      known *= shape[i];
    }
  }
  if (inferred >= 0) {
    check(known > 0 && x.numel() % known == 0, "reshape", "cannot infer -1 in {} for {} elements",
          shape_str(shape), x.numel());
    shape[static_cast<std::size_t>(inferred)] = x.numel() / known;
  }
  check(shape_numel(shape) == x.numel(), "reshape", "cannot reshape {} ({} elements) to {} ({} elements)",
        shape_str(x.shape()), x.numel(), shape_str(shape), shape_numel(shape));
  const Tensor dense = x.is_contiguous() ? x : contiguous_raw(x);
  Tensor out = dense.as_strided(shape, contiguous_strides(shape), dense.byte_offset());
  const Shape from = x.shape();
  return record(OpId::reshape, out, {x},
                [from](const Node&, const Tensor& g) { return std::vector<Tensor>{reshape(g, from)}; });
}

Tensor permute(const Tensor& x, const Shape& dims) {
  trace_op(OpId::permute);
  check(static_cast<std::int64_t>(dims.size()) == x.dim(), "permute", "got {} dims for a tensor of rank {}",
        dims.size(), x.dim());
  Shape shape(dims.size()), strides(dims.size()), inverse(dims.size(), -1);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const auto d = static_cast<std::size_t>(normalize_dim(dims[i], x.dim(), "permute"));
    check(inverse[d] < 0, "permute", "dim {} repeated in {}", d, shape_str(dims));
    inverse[d] = static_cast<std::int64_t>(i);
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = x.as_strided(shape, strides, x.byte_offset());
  return record(OpId::permute, out, {x},
                [inverse](const Node&, const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
}

Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1) {
  trace_op(OpId::transpose);
  Shape dims(static_cast<std::size_t>(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[static_cast<std::size_t>(normalize_dim(dim0, x.dim(), "transpose"))],
            dims[static_cast<std::size_t>(normalize_dim(dim1, x.dim(), "transpose"))]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t end) {
  trace_op(OpId::slice);
  const auto d = static_cast<std::size_t>(normalize_dim(dim, x.dim(), "slice"));
  const std::int64_t size = x.shape()[d];
  check(0 <= start && start <= end && end <= size, "slice", "range [{}, {}) is outside [0, {}] of dim {}", start,
        end, size, d);
  Shape shape = x.shape();
  shape[d] = end - start;
  const auto offset = x.byte_offset() + static_cast<std::size_t>(start * x.strides()[d]) * dtype_size(x.dtype());
  Tensor out = x.as_strided(shape, x.strides(), offset);
  const Shape full = x.shape();
  return record(OpId::slice, out, {x}, [full, d, start](const Node&, const Tensor& g) {
    Tensor dx = Tensor::zeros(full, g.dtype(), g.device());
    const auto at = static_cast<std::size_t>(start * dx.strides()[d]) * dtype_size(g.dtype());
    Tensor window = dx.as_strided(g.shape(), dx.strides(), at);
    LORACPP_KERNEL(g.device(), copy_strided)(g.raw_data(), g.strides().data(), window.raw_mutable_data(),
                                             window.strides().data(), g.shape().data(), static_cast<int>(g.dim()),
                                             dtype_size(g.dtype()));
    return std::vector<Tensor>{dx};
  });
}

void assign(const Tensor& dst, const Tensor& src) {
  check(dst.shape() == src.shape(), "assign", "shapes differ: destination {}, source {}", shape_str(dst.shape()),
        shape_str(src.shape()));
  require_same_dtype("assign", dst, src);
  require_same_device("assign", {dst, src});
  check(!(autograd::grad_enabled() && src.requires_grad()), "assign",
        "the source requires grad; copy it inside a no-grad scope (the copy is not recorded)");
  Tensor target = dst;
  LORACPP_KERNEL(src.device(), copy_strided)(src.raw_data(), src.strides().data(), target.raw_mutable_data(),
                                             dst.strides().data(), src.shape().data(), static_cast<int>(src.dim()),
                                             dtype_size(src.dtype()));
}

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view place) {
  const std::size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    check(da == db || da == 1 || db == 1, place, "shapes {} and {} do not broadcast", shape_str(a), shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  trace_op(OpId::broadcast_to);
  check(shape.size() >= x.shape().size(), "broadcast_to", "cannot broadcast {} to the smaller rank of {}",
        shape_str(x.shape()), shape_str(shape));
  const std::size_t lead = shape.size() - x.shape().size();
  Shape strides(shape.size(), 0);
  for (std::size_t i = 0; i < x.shape().size(); ++i) {
    const std::int64_t from = x.shape()[i], to = shape[lead + i];
    check(from == to || from == 1, "broadcast_to", "cannot broadcast {} to {}", shape_str(x.shape()),
          shape_str(shape));
    strides[lead + i] = from == to ? x.strides()[i] : 0;
  }
  Tensor out = x.as_strided(shape, strides, x.byte_offset());
  const Shape from = x.shape();
  return record(OpId::broadcast_to, out, {x},
                [from](const Node&, const Tensor& g) { return std::vector<Tensor>{sum_to(g, from)}; });
}

Tensor concat(const std::vector<Tensor>& xs, std::int64_t dim) {
  trace_op(OpId::concat);
  check(!xs.empty(), "concat", "needs at least one tensor");
  const Tensor& first = xs.front();
  const auto d = static_cast<std::size_t>(normalize_dim(dim, first.dim(), "concat"));
  Shape shape = first.shape();
  shape[d] = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    check(x.dim() == first.dim(), "concat", "tensor {} has rank {}, expected {}", i, x.dim(), first.dim());
    require_same_dtype("concat", first, x);
    require_same_device("concat", {first, x});
    for (std::size_t k = 0; k < shape.size(); ++k)
      check(k == d || x.shape()[k] == first.shape()[k], "concat",
            "tensor {} has shape {}, expected {} outside dim {}", i, shape_str(x.shape()), shape_str(first.shape()), d);
    shape[d] += x.shape()[d];
  }
  Tensor out = Tensor::zeros(shape, first.dtype(), first.device());
  std::int64_t start = 0;
  std::vector<std::int64_t> starts;
  for (const auto& x : xs) {
    const auto at = static_cast<std::size_t>(start * out.strides()[d]) * dtype_size(out.dtype());
    Tensor window = out.as_strided(x.shape(), out.strides(), at);
    LORACPP_KERNEL(x.device(), copy_strided)(x.raw_data(), x.strides().data(), window.raw_mutable_data(),
                                             window.strides().data(), x.shape().data(), static_cast<int>(x.dim()),
                                             dtype_size(x.dtype()));
    starts.push_back(start);
    start += x.shape()[d];
  }
  return record(OpId::concat, out, xs, [starts, d](const Node& node, const Tensor& g) {
    std::vector<Tensor> grads(node.inputs.size());
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!node.needs_grad(i)) continue;
      const auto di = static_cast<std::int64_t>(d);
      grads[i] = contiguous_raw(slice(g, di, starts[i], starts[i] + node.inputs[i].shape()[d]));
    }
    return grads;
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, std::int64_t dim) {
  trace_op(OpId::split);
  const auto d = normalize_dim(dim, x.dim(), "split");
  std::int64_t total = 0;
  for (auto s : sizes) {
    check(s >= 0, "split", "negative size {}", s);
    total += s;
  }
  check(total == x.shape()[static_cast<std::size_t>(d)], "split", "sizes add up to {} but dim {} has {}", total, d,
        x.shape()[static_cast<std::size_t>(d)]);
  std::vector<Tensor> parts;
  std::int64_t start = 0;
  for (auto s : sizes) {
    parts.push_back(slice(x, d, start, start + s));
    start += s;
  }
  return parts;
}

}  // namespace loracpp::ops
