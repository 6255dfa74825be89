#pragma once
// Helpers shared by the op files; not part of the public op API.
#include <initializer_list>
#include <optional>
#include <string_view>

#include "backend/kernels.h"
#include "core/tensor.h"
#include "ops/tape.h"

namespace loracpp::ops::detail {

using backend::i64;
// What every op file uses to record itself.
using autograd::Node;
using autograd::BackwardReads;
using autograd::record;
using autograd::trace_op;

void require_floating(std::string_view op, const Tensor& x, std::string_view role);
void require_integer(std::string_view op, const Tensor& x, std::string_view role);
void require_same_dtype(std::string_view op, const Tensor& a, const Tensor& b);
void require_same_device(std::string_view op, std::initializer_list<Tensor> tensors);
void require_rank(std::string_view op, const Tensor& x, std::int64_t rank, std::string_view role);

// A contiguous f32 copy of x, or x itself when it already is one (never recorded).
Tensor as_f32(const Tensor& x);
// A contiguous copy of x in its own dtype (never recorded).
Tensor contiguous_raw(const Tensor& x);
// A contiguous bf16 copy of x (x itself when it already is one), for bf16 products. The copy of the
// latest tensor rounded is kept while that tensor's storage is unwritten, so projections of one
// activation (q, k and v; gate and up) round it once and share the copy.
Tensor as_bf16(const Tensor& x);
// Converts a contiguous f32 tensor to dtype (itself when dtype is f32).
Tensor cast_raw(const Tensor& x_f32, DType dtype);
// A fresh tensor viewing the same elements: ops return a new tensor even when no copy is needed.
Tensor alias(const Tensor& x);
Tensor zeros_f32(const Shape& shape, Device device);
Tensor empty_f32(const Shape& shape, Device device);  // for outputs a kernel writes in full
// ids as contiguous i64 on their device, each checked (on the host) to lie in [0, limit) or to
// equal skip_value; counted: how many are not skip_value.
struct CheckedIds {
  Tensor index;
  i64 counted = 0;
};
CheckedIds checked_ids(std::string_view op, const Tensor& ids, i64 limit, std::optional<i64> skip_value = {});

inline float* f32(Tensor& t) { return t.mutable_data<float>(); }
inline const float* f32(const Tensor& t) { return t.data<float>(); }

}  // namespace loracpp::ops::detail
