// Products through the backend GEMM: matmul (batched, broadcast, transposed views) and linear.
#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

namespace {

// How a [rows, cols] matrix view reaches BLAS: row-major, or as the transpose of a row-major
// [cols, rows] matrix; anything else is copied first.
struct GemmOperand {
  Tensor tensor;  // f32, possibly the original view
  bool transposed = false;
  std::int64_t ld = 0;
};

GemmOperand gemm_operand(const Tensor& x) {
  const Tensor xf = x.dtype() == DType::f32 ? x : as_f32(x);
  const std::size_t r = static_cast<std::size_t>(xf.dim()) - 2, c = r + 1;
  const std::int64_t rows = xf.shape()[r], cols = xf.shape()[c];
  const std::int64_t sr = xf.strides()[r], sc = xf.strides()[c];
  if ((sc == 1 || cols == 1) && (rows == 1 || sr >= std::max<std::int64_t>(cols, 1)))
    return {xf, false, rows == 1 ? std::max<std::int64_t>(cols, 1) : sr};
  if ((sr == 1 || rows == 1) && (cols == 1 || sc >= std::max<std::int64_t>(rows, 1)))
    return {xf, true, cols == 1 ? std::max<std::int64_t>(rows, 1) : sc};
  return {contiguous_raw(xf), false, std::max<std::int64_t>(cols, 1)};
}

// A recorded op's output whose node takes its gradient in bf16 as well (Node::takes_bf16_grad).
Tensor taking_bf16_grad(Tensor recorded) {
  if (recorded.grad_fn()) recorded.grad_fn()->takes_bf16_grad = true;
  return recorded;
}

// a (any float) @ b (a bf16 matrix, a frozen weight or its transpose) -> f32: a is rounded to bf16
// and the product accumulates in f32 (the bf16 training path).
Tensor matmul_bf16_weight(const Tensor& a, const Tensor& b) {
  const std::int64_t m_total = a.numel() / std::max<std::int64_t>(a.size(-1), 1), k = a.size(-1), n = b.size(-1);
  check(b.size(0) == k, "matmul", "inner dimensions differ: a is {}, b is {}", shape_str(a.shape()), shape_str(b.shape()));
  const Tensor a16 = as_bf16(a);
  // b as BLAS sees it: row-major [k, n], or the transpose of a row-major [n, k] (x @ Wᵀ).
  bool trans_b = false;
  std::int64_t ldb = 0;
  Tensor bc = b;
  if (b.strides()[1] == 1 && b.strides()[0] >= std::max<std::int64_t>(n, 1)) {
    ldb = b.strides()[0];
  } else if (b.strides()[0] == 1 && b.strides()[1] >= std::max<std::int64_t>(k, 1)) {
    trans_b = true;
    ldb = b.strides()[1];
  } else {
    bc = contiguous_raw(b);
    ldb = std::max<std::int64_t>(n, 1);
  }
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(n);
  Tensor out = empty_f32(out_shape, a.device());
  LORACPP_KERNEL(a.device(), gemm_bf16)(trans_b, m_total, n, k, 1.0f, a16.data<std::uint16_t>(),
                                        std::max<std::int64_t>(k, 1), bc.data<std::uint16_t>(), ldb, 0.0f, f32(out),
                                        std::max<std::int64_t>(n, 1));
  return out;
}

// a (any float) @ b (a matrix in blocks, q8_0 or q4_0: a frozen weight W [n, k] seen as Wᵀ, or W
// [k, n] as stored, for a gradient's product) -> f32, through the blocks' kernel.
Tensor matmul_block_weight(const Tensor& a, const Tensor& b) {
  check(b.dim() == 2 && a.dim() >= 2, "matmul", "a {} operand must be the right one of rank 2, got {} @ {}",
        dtype_name(b.dtype()), shape_str(a.shape()), shape_str(b.shape()));
  const std::int64_t k = a.size(-1), n = b.size(1), m_total = a.numel() / std::max<std::int64_t>(k, 1);
  check(b.size(0) == k, "matmul", "inner dimensions differ: a is {}, b is {}", shape_str(a.shape()), shape_str(b.shape()));
  // As stored ([k, n], rows n apart), or the stored [n, k] weight's transpose: block tensors allow
  // no other view. (Strides, not is_contiguous: with a size-1 dim both read as contiguous.)
  const bool trans_b = !(b.strides()[1] == 1 && b.strides()[0] == std::max<std::int64_t>(n, 1));
  const Tensor af = contiguous_raw(as_f32(a));
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(n);
  Tensor out = empty_f32(out_shape, a.device());
  LORACPP_KERNEL(a.device(), gemm_blocks)(b.dtype(), block_products(), trans_b, m_total, n, k, f32(af),
                                          std::max<std::int64_t>(k, 1), b.raw_data(), 0.0f, f32(out),
                                          std::max<std::int64_t>(n, 1));
  return out;
}

Tensor matmul_raw(const Tensor& a, const Tensor& b) {
  require_floating("matmul", a, "a");
  require_floating("matmul", b, "b");
  if (is_block_dtype(b.dtype())) {
    require_same_device("matmul", {a, b});
    return cast_raw(matmul_block_weight(a, b), is_block_dtype(a.dtype()) ? DType::f32 : a.dtype());
  }
  check(!is_block_dtype(a.dtype()), "matmul", "a {} operand must be the right one (a frozen weight), got {} @ {}",
        dtype_name(a.dtype()), shape_str(a.shape()), shape_str(b.shape()));
  if (b.dtype() == DType::bf16 && b.dim() == 2 && a.dtype() != DType::bf16 && a.dim() >= 2) {
    require_same_device("matmul", {a, b});
    return matmul_bf16_weight(a, b);
  }
  require_same_dtype("matmul", a, b);
  require_same_device("matmul", {a, b});
  check(a.dim() >= 2 && b.dim() >= 2, "matmul", "operands need rank >= 2, got {} and {}", shape_str(a.shape()),
        shape_str(b.shape()));
  const std::int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  check(b.size(-2) == k, "matmul", "inner dimensions differ: a is {}, b is {}", shape_str(a.shape()),
        shape_str(b.shape()));
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(a_batch, b_batch, "matmul");
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = empty_f32(out_shape, a.device());
  auto gemm = LORACPP_KERNEL(a.device(), gemm);

  // A 2-D right operand against a dense left operand: fold the batch into the rows, one GEMM.
  if (b.dim() == 2 && a.is_contiguous()) {
    const Tensor af = as_f32(a);
    const GemmOperand bo = gemm_operand(b);
    const std::int64_t rows = shape_numel(batch) * m;
    gemm(false, bo.transposed, rows, n, k, 1.0f, f32(af), std::max<std::int64_t>(k, 1), f32(bo.tensor), bo.ld,
         0.0f, f32(out), std::max<std::int64_t>(n, 1));
    return cast_raw(out, a.dtype());
  }

  const GemmOperand ao = gemm_operand(a), bo = gemm_operand(b);
  // Element strides of each operand's batch dims, 0 where broadcast.
  auto batch_strides = [&batch](const Tensor& t) {
    Shape strides(batch.size(), 0);
    const std::size_t lead = batch.size() - (t.shape().size() - 2);
    for (std::size_t i = 0; i + 2 < t.shape().size(); ++i)
      strides[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
    return strides;
  };
  const Shape as = batch_strides(ao.tensor), bs = batch_strides(bo.tensor);
  std::vector<std::int64_t> a_offsets, b_offsets;
  for_each_offset(batch, as, [&](std::int64_t o) { a_offsets.push_back(o); });
  for_each_offset(batch, bs, [&](std::int64_t o) { b_offsets.push_back(o); });
  const float* ap = f32(ao.tensor);
  const float* bp = f32(bo.tensor);
  float* cp = f32(out);
  for (std::size_t i = 0; i < a_offsets.size(); ++i) {
    gemm(ao.transposed, bo.transposed, m, n, k, 1.0f, ap + a_offsets[i], ao.ld, bp + b_offsets[i], bo.ld, 0.0f,
         cp + static_cast<std::int64_t>(i) * m * n, std::max<std::int64_t>(n, 1));
  }
  return cast_raw(out, a.dtype());
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  trace_op(OpId::matmul);
  // Each operand is kept for the other's gradient only: the input of a frozen weight is not kept.
  const Tensor keep_a = b.requires_grad() ? a : Tensor(), keep_b = a.requires_grad() ? b : Tensor();
  Tensor y = record(OpId::matmul, matmul_raw(a, b), {a, b}, [keep_a, keep_b](const Node& node, const Tensor& g) {
    const Shape &x_shape = node.inputs[0].shape(), &y_shape = node.inputs[1].shape();
    std::vector<Tensor> grads(2);
    // dx = g @ y^T; only computed when x needs it. A bf16 g (below) is multiplied as it is.
    if (node.needs_grad(0)) {
      const Tensor yt = transpose(keep_b, -1, -2);
      const bool handed_bf16 = node.takes_bf16_grad && g.dtype() == DType::bf16;  // x itself is not bf16
      grads[0] = sum_to(handed_bf16 ? matmul_bf16_weight(g, yt) : matmul(g, yt), x_shape);
    }
    // dy = x^T @ g; never computed for a frozen y (the LoRA rule).
    if (node.needs_grad(1)) {
      if (y_shape.size() == 2 && x_shape.size() > 2) {  // fold the batch: one GEMM with the batch as the inner dim
        grads[1] = matmul(transpose(reshape(keep_a, {-1, keep_a.size(-1)}), 0, 1), reshape(g, {-1, g.size(-1)}));
      } else {
        grads[1] = sum_to(matmul(transpose(keep_a, -1, -2), g), y_shape);
      }
    }
    return grads;
  });
  // A frozen bf16 weight multiplies the gradient in bf16 only (dx's product rounds it), so the node
  // takes it in bf16 where its producer can round it as it writes.
  if (b.dtype() == DType::bf16 && b.dim() == 2 && !b.requires_grad() && a.dtype() != DType::bf16)
    return taking_bf16_grad(y);
  return y;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  trace_op(OpId::linear);
  require_floating("linear", weight, "weight");
  require_rank("linear", weight, 2, "weight");
  check(x.defined() && x.dim() >= 1 && x.size(-1) == weight.size(1), "linear",
        "input's last dim must equal weight's in_features {}, got input {}", weight.size(1),
        shape_str(x));
  Tensor x2 = x.dim() == 1 ? reshape(x, {1, x.size(0)}) : x;
  Tensor y = matmul(x2, transpose(weight, 0, 1));
  if (bias.defined()) {
    check(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear", "bias must be [{}], got {}", weight.size(0),
          shape_str(bias.shape()));
    y = add(y, bias);
  }
  return x.dim() == 1 ? reshape(y, {weight.size(0)}) : y;
}

namespace {
// Views without recording: a contiguous tensor with another shape, a matrix transposed.
Tensor view_as(const Tensor& contiguous, const Shape& shape) {
  return contiguous.as_strided(shape, contiguous_strides(shape), contiguous.byte_offset());
}
Tensor transposed(const Tensor& m) {
  return m.as_strided({m.size(1), m.size(0)}, {m.strides()[1], m.strides()[0]}, m.byte_offset());
}
}  // namespace

namespace {

Shape output_shape(const Tensor& x, std::int64_t out) {
  Shape shape(x.shape().begin(), x.shape().end() - 1);
  shape.push_back(out);
  return shape;
}

void add_bias(Tensor& y, const Tensor& bias) {  // y [n, out] += bias [out]
  if (!bias.defined()) return;
  const Tensor bias_f = contiguous_raw(as_f32(bias));
  const std::int64_t shape[] = {y.size(0), y.size(1)}, y_strides[] = {y.size(1), 1}, b_strides[] = {0, 1};
  LORACPP_KERNEL(y.device(), binary)(backend::BinaryOp::add, f32(y), y_strides, f32(bias_f), b_strides, f32(y), shape, 2);
}

// mᵀ (an f32 matrix) as a contiguous bf16 matrix, for the rank-r factors of the adapter gradients.
// Rounded with cast_raw, not as_bf16: only activations go through as_bf16's one-entry cache, so
// that the adapter's own operands never evict the activation q, k and v share.
Tensor transposed_bf16(const Tensor& m) { return cast_raw(contiguous_raw(transposed(m)), DType::bf16); }

// lora_linear over a bf16 base weight (the bf16 training path), or one in blocks under
// Bf16BlockProducts, widened to bf16 for each pass that reads it (the blocks are what is kept). x
// is rounded to bf16 once (and shared with other projections of the same activation), and kept in
// bf16 for the backward pass.
// Every product runs in bf16 with f32 accumulation: those that read x or the upstream gradient,
// and the two rank-r expansions added into the frozen products' outputs (t Bᵀ into y, u A into
// dx), whose factors t and u are rounded for them; A and B themselves stay f32. Every backward
// product reads the upstream gradient in bf16 alone, so the node takes it in bf16 where its
// producer can round it as it writes (SwiGLU's backward).
Tensor lora_linear_bf16(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& a, const Tensor& b,
                        float scale) {
  const std::int64_t in = weight.size(1), out = weight.size(0), r = a.size(0);
  const std::int64_t n = x.numel() / std::max<std::int64_t>(in, 1);
  const Device device = x.device();
  const bool blocks = is_block_dtype(weight.dtype());
  const auto widened = [blocks](const Tensor& w) { return blocks ? cast_raw(w, DType::bf16) : w; };
  const Tensor x16 = as_bf16(x), w = contiguous_raw(weight);
  const Tensor af = contiguous_raw(as_f32(a)), bf = contiguous_raw(as_f32(b));
  const Tensor a16 = cast_raw(af, DType::bf16), b16 = cast_raw(bf, DType::bf16);
  auto gemm16 = LORACPP_KERNEL(device, gemm_bf16);
  auto u16 = [](const Tensor& t) { return t.data<std::uint16_t>(); };
  // The frozen product with the rank-r expansion added in the same pass where the backend has it.
  const auto low_rank = backend::kernels(device).gemm_bf16_low_rank;
  const auto product_and_expansion = [low_rank, gemm16, u16](bool trans_b, std::int64_t m, std::int64_t cols,
                                                             std::int64_t k, std::int64_t rank, const Tensor& left,
                                                             const Tensor& frozen, float s, const Tensor& factor,
                                                             const Tensor& adapter, Tensor& c) {
    const std::int64_t ld_frozen = trans_b ? k : cols, ld_adapter = trans_b ? rank : cols;
    if (low_rank != nullptr) {
      low_rank(trans_b, m, cols, k, rank, u16(left), k, u16(frozen), ld_frozen, s, u16(factor), rank, u16(adapter),
               ld_adapter, f32(c), cols);
      return;
    }
    gemm16(trans_b, m, cols, k, 1.0f, u16(left), k, u16(frozen), ld_frozen, 0.0f, f32(c), cols);
    gemm16(trans_b, m, cols, rank, s, u16(factor), rank, u16(adapter), ld_adapter, 1.0f, f32(c), cols);
  };
  // t = x Aᵀ; y = x Wᵀ + scale t Bᵀ (+ bias)
  Tensor t = empty_f32({n, r}, device);
  gemm16(true, n, r, in, 1.0f, u16(x16), in, u16(a16), in, 0.0f, f32(t), r);
  Tensor y = empty_f32({n, out}, device);
  product_and_expansion(true, n, out, in, r, x16, widened(w), scale, cast_raw(t, DType::bf16), b16, y);
  add_bias(y, bias);
  const Tensor result = cast_raw(view_as(y, output_shape(x, out)), x.dtype());
  return taking_bf16_grad(record(OpId::lora_linear, result, {x, weight, bias, a, b},
                [x16, t, a16, b16, w, widened, scale, n, in, out, r, u16, product_and_expansion](const Node& node,
                                                                                               const Tensor& grad) {
                  const Device grad_device = grad.device();
                  auto product = LORACPP_KERNEL(grad_device, gemm);
                  auto product16 = LORACPP_KERNEL(grad_device, gemm_bf16);
                  // [n, out]; handed over in bf16 where its producer could (Node::takes_bf16_grad)
                  const Tensor g16 = grad.dtype() == DType::bf16 ? contiguous_raw(grad)
                                                                 : cast_raw(as_f32(grad), DType::bf16);
                  std::vector<Tensor> grads(5);
                  Tensor u;  // g B [n, r], shared by dx and dA
                  if (node.needs_grad(0) || node.needs_grad(3)) {
                    u = empty_f32({n, r}, grad_device);
                    product16(false, n, r, out, 1.0f, u16(g16), out, u16(b16), r, 0.0f, f32(u), r);
                  }
                  if (node.needs_grad(0)) {  // dx = g W + scale u A
                    Tensor dx = empty_f32({n, in}, grad_device);
                    product_and_expansion(false, n, in, out, r, g16, widened(w), scale, cast_raw(u, DType::bf16), a16,
                                          dx);
                    grads[0] = cast_raw(view_as(dx, node.inputs[0].shape()), node.inputs[0].dtype());
                  }
                  if (node.needs_grad(1)) {  // a trainable base weight (not LoRA's case): gᵀ x, in f32
                    const Tensor g = view_as(as_f32(grad), {n, out}), xf = as_f32(x16);
                    Tensor dw = empty_f32({out, in}, grad_device);
                    product(true, false, out, in, n, 1.0f, f32(g), out, f32(xf), in, 0.0f, f32(dw), in);
                    grads[1] = cast_raw(dw, node.inputs[1].dtype());
                  }
                  if (node.needs_grad(2))
                    grads[2] = cast_raw(sum_to(view_as(as_f32(grad), {n, out}), {out}), node.inputs[2].dtype());
                  if (node.needs_grad(3)) {  // dA = scale uᵀ x
                    Tensor da = empty_f32({r, in}, grad_device);
                    product16(false, r, in, n, scale, u16(transposed_bf16(u)), n, u16(x16), in, 0.0f, f32(da), in);
                    grads[3] = cast_raw(da, node.inputs[3].dtype());
                  }
                  if (node.needs_grad(4)) {  // dB = scale gᵀ t, as (tᵀ g)ᵀ so that g is read as it lies
                    Tensor dbt = empty_f32({r, out}, grad_device);
                    product16(false, r, out, n, scale, u16(transposed_bf16(t)), n, u16(g16), out, 0.0f, f32(dbt),
                              out);
                    grads[4] = cast_raw(contiguous_raw(transposed(dbt)), node.inputs[4].dtype());
                  }
                  return grads;
                }));
}

}  // namespace

Tensor lora_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& a, const Tensor& b,
                   float scale) {
  trace_op(OpId::lora_linear);
  constexpr std::string_view op = "lora_linear";
  require_floating(op, weight, "weight");
  require_rank(op, weight, 2, "weight");
  require_rank(op, a, 2, "lora A");
  require_rank(op, b, 2, "lora B");
  const std::int64_t in = weight.size(1), out = weight.size(0), r = a.size(0);
  check(x.defined() && x.dim() >= 1 && x.size(-1) == in, op, "input's last dim must equal weight's in_features {}, got {}",
        in, shape_str(x));
  check(a.size(1) == in && b.size(0) == out && b.size(1) == r, op,
        "adapter shapes must be A [r, {}] and B [{}, r], got A {} and B {}", in, out, shape_str(a.shape()),
        shape_str(b.shape()));
  check(!bias.defined() || (bias.dim() == 1 && bias.size(0) == out), op, "bias must be [{}], got {}", out,
        shape_str(bias));
  require_same_device(op, {x, weight, a, b, bias});
  const std::int64_t n = x.numel() / std::max<std::int64_t>(in, 1);
  // A few rows (a generated token) cost less in f32 than rounding the adapter for bf16 products.
  constexpr std::int64_t kBf16AdapterRows = 16;
  const bool bf16_path = weight.dtype() == DType::bf16 || (is_block_dtype(weight.dtype()) && bf16_block_products());
  if (bf16_path && n >= kBf16AdapterRows) return lora_linear_bf16(x, weight, bias, a, b, scale);
  const Tensor x2 = view_as(as_f32(x), {n, in});
  const Tensor af = contiguous_raw(as_f32(a)), bf = contiguous_raw(as_f32(b));
  auto gemm = LORACPP_KERNEL(x.device(), gemm);
  // t = x Aᵀ; y = scale t Bᵀ + x Wᵀ (+ bias). A dense f32 weight's product adds into y, which the
  // adapter's product wrote without reading it: one pass over y saved, and BLAS's zeroing of it. A
  // bf16 or block weight stays as it is (its own products, y = x Wᵀ first); other dtypes compute in f32.
  const Tensor w = weight.dtype() == DType::bf16 || is_block_dtype(weight.dtype()) ? weight : as_f32(weight);
  const bool adds_into_y = w.dtype() == DType::f32 && w.is_contiguous();
  Tensor t = empty_f32({n, r}, x.device());
  Tensor y;
  // A few rows (generated tokens) in one pass over the weights where the backend has it.
  constexpr std::int64_t kFusedRows = 8;
  if (n <= kFusedRows && w.is_contiguous() && backend::kernels(x.device()).lora_rows != nullptr) {
    y = empty_f32({n, out}, x.device());
    LORACPP_KERNEL(x.device(), lora_rows)(f32(x2), w.raw_data(), w.dtype(), block_products(), f32(af), f32(bf), n,
                                          in, out, r, scale, f32(t), f32(y));
  } else {
    gemm(false, true, n, r, in, 1.0f, f32(x2), in, f32(af), in, 0.0f, f32(t), r);
    if (adds_into_y) {
      y = empty_f32({n, out}, x.device());
      gemm(false, true, n, out, r, scale, f32(t), r, f32(bf), r, 0.0f, f32(y), out);
      gemm(false, true, n, out, in, 1.0f, f32(x2), in, f32(w), in, 1.0f, f32(y), out);
    } else {
      y = matmul_raw(x2, transposed(w));
      gemm(false, true, n, out, r, scale, f32(t), r, f32(bf), r, 1.0f, f32(y), out);
    }
  }
  add_bias(y, bias);
  const Tensor result = cast_raw(view_as(y, output_shape(x, out)), x.dtype());
  return record(OpId::lora_linear, result, {x, weight, bias, a, b},
                [x2, t, af, bf, w, adds_into_y, scale, n, in, out, r](const Node& node, const Tensor& grad) {
                  const Tensor g = view_as(as_f32(grad), {n, out});
                  auto product = LORACPP_KERNEL(g.device(), gemm);
                  std::vector<Tensor> grads(5);
                  Tensor u;  // g B [n, r], shared by dx and dA
                  if (node.needs_grad(0) || node.needs_grad(3)) {
                    u = empty_f32({n, r}, g.device());
                    product(false, false, n, r, out, 1.0f, f32(g), out, f32(bf), r, 0.0f, f32(u), r);
                  }
                  if (node.needs_grad(0)) {  // dx = scale u A + g W, as y above
                    Tensor dx;
                    if (adds_into_y) {
                      dx = empty_f32({n, in}, g.device());
                      product(false, false, n, in, r, scale, f32(u), r, f32(af), in, 0.0f, f32(dx), in);
                      product(false, false, n, in, out, 1.0f, f32(g), out, f32(w), in, 1.0f, f32(dx), in);
                    } else {
                      dx = matmul_raw(g, w);
                      product(false, false, n, in, r, scale, f32(u), r, f32(af), in, 1.0f, f32(dx), in);
                    }
                    grads[0] = cast_raw(view_as(dx, node.inputs[0].shape()), node.inputs[0].dtype());
                  }
                  if (node.needs_grad(1)) {  // a trainable base weight (not LoRA's case): gᵀ x
                    Tensor dw = empty_f32({out, in}, g.device());
                    product(true, false, out, in, n, 1.0f, f32(g), out, f32(x2), in, 0.0f, f32(dw), in);
                    grads[1] = cast_raw(dw, node.inputs[1].dtype());
                  }
                  if (node.needs_grad(2)) grads[2] = cast_raw(sum_to(g, {out}), node.inputs[2].dtype());
                  if (node.needs_grad(3)) {  // dA = scale uᵀ x
                    Tensor da = empty_f32({r, in}, g.device());
                    product(true, false, r, in, n, scale, f32(u), r, f32(x2), in, 0.0f, f32(da), in);
                    grads[3] = cast_raw(da, node.inputs[3].dtype());
                  }
                  if (node.needs_grad(4)) {  // dB = scale gᵀ t
                    Tensor db = empty_f32({out, r}, g.device());
                    product(true, false, out, r, n, scale, f32(g), out, f32(t), r, 0.0f, f32(db), r);
                    grads[4] = cast_raw(db, node.inputs[4].dtype());
                  }
                  return grads;
                });
}

}  // namespace loracpp::ops
