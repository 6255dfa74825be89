#include "ops/common.h"

#include <vector>

namespace loracpp::ops::detail {

void require_floating(std::string_view op, const Tensor& x, std::string_view role) {
  check(x.defined(), op, "{} is undefined", role);
  check(is_floating(x.dtype()), op, "{} must be a floating tensor (f32, bf16, f16), got {}", role,
        dtype_name(x.dtype()));
}

void require_integer(std::string_view op, const Tensor& x, std::string_view role) {
  check(x.defined(), op, "{} is undefined", role);
  check(x.dtype() == DType::i32 || x.dtype() == DType::i64, op, "{} must be an i32 or i64 tensor, got {}", role,
        dtype_name(x.dtype()));
}

void require_same_dtype(std::string_view op, const Tensor& a, const Tensor& b) {
  check(a.dtype() == b.dtype(), op, "operands must share a dtype, got {} and {}", dtype_name(a.dtype()),
        dtype_name(b.dtype()));
}

void require_same_device(std::string_view op, std::initializer_list<Tensor> tensors) {
  const Tensor* first = nullptr;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    if (first == nullptr) first = &t;
    check(t.device() == first->device(), op, "operands must be on one device, got {} and {}",
          device_name(first->device()), device_name(t.device()));
  }
}

void require_rank(std::string_view op, const Tensor& x, std::int64_t rank, std::string_view role) {
  check(x.dim() == rank, op, "{} must have rank {}, got shape {}", role, rank, shape_str(x.shape()));
}

Tensor contiguous_raw(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const Shape dst_strides = contiguous_strides(x.shape());
  LORACPP_KERNEL(x.device(), copy_strided)(x.raw_data(), x.strides().data(), out.raw_mutable_data(),
                                           dst_strides.data(), x.shape().data(), static_cast<int>(x.dim()),
                                           dtype_size(x.dtype()));
  return out;
}

Tensor as_f32(const Tensor& x) {
  Tensor dense = contiguous_raw(x);
  if (dense.dtype() == DType::f32) return dense;
  Tensor out = Tensor::empty(x.shape(), DType::f32, x.device());
  LORACPP_KERNEL(x.device(), convert)(dense.raw_data(), dense.dtype(), out.raw_mutable_data(), DType::f32,
                                      dense.numel());
  return out;
}

Tensor as_bf16(const Tensor& x) {
  if (x.dtype() == DType::bf16 && x.is_contiguous()) return x;
  struct Rounded {
    std::weak_ptr<Storage> source;
    std::uint64_t version = 0;
    std::size_t byte_offset = 0;
    Shape shape, strides;
    DType dtype = DType::f32;
    Tensor copy;
  };
  static thread_local Rounded last;
  const TensorImpl& impl = x.impl();
  const auto source = last.source.lock();
  if (source && source == impl.storage && last.version == source->version() && last.byte_offset == impl.byte_offset &&
      last.shape == impl.shape && last.strides == impl.strides && last.dtype == impl.dtype)
    return last.copy;
  const Tensor dense = contiguous_raw(x);
  Tensor out = Tensor::empty(x.shape(), DType::bf16, x.device());
  LORACPP_KERNEL(x.device(), convert)(dense.raw_data(), dense.dtype(), out.raw_mutable_data(), DType::bf16,
                                      dense.numel());
  last = {impl.storage, impl.storage->version(), impl.byte_offset, impl.shape, impl.strides, impl.dtype, out};
  return out;
}

Tensor cast_raw(const Tensor& x_f32, DType dtype) {
  if (dtype == x_f32.dtype()) return x_f32;
  Tensor dense = contiguous_raw(x_f32);
  Tensor out = Tensor::empty(x_f32.shape(), dtype, x_f32.device());
  LORACPP_KERNEL(x_f32.device(), convert)(dense.raw_data(), dense.dtype(), out.raw_mutable_data(), dtype,
                                          dense.numel());
  return out;
}

Tensor alias(const Tensor& x) { return x.as_strided(x.shape(), x.strides(), x.byte_offset()); }

Tensor zeros_f32(const Shape& shape, Device device) { return Tensor::zeros(shape, DType::f32, device); }
Tensor empty_f32(const Shape& shape, Device device) { return Tensor::empty(shape, DType::f32, device); }

CheckedIds checked_ids(std::string_view op, const Tensor& ids, i64 limit, std::optional<i64> skip_value) {
  require_integer(op, ids, "ids");
  Tensor out = Tensor::zeros(ids.shape(), DType::i64, Device::cpu);
  auto* dst = out.mutable_data<std::int64_t>();
  std::int64_t k = 0, counted = 0;
  for (const auto id : ids.to_ints()) {
    if (!(skip_value && id == *skip_value)) {
      check(id >= 0 && id < limit, op, "index {} at position {} is out of range [0, {})", id, k, limit);
      ++counted;
    }
    dst[k++] = id;
  }
  return {out.to(ids.device()), counted};
}

}  // namespace loracpp::ops::detail
