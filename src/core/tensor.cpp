#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/blocks.h"

namespace loracpp {

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<std::int64_t>(shape[i], 1);
  }
  return strides;
}

std::int64_t normalize_dim(std::int64_t dim, std::int64_t rank, std::string_view place) {
  const std::int64_t resolved = dim < 0 ? dim + rank : dim;
  check(resolved >= 0 && resolved < rank, place, "dim {} out of range for a tensor of rank {}", dim, rank);
  return resolved;
}

namespace {
std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, std::size_t byte_offset,
                                      const Shape& shape, DType dtype) {
  for (auto s : shape) check(s >= 0, "tensor", "negative size in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->byte_offset = byte_offset;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return impl;
}

void store_float(void* base, std::int64_t i, DType dtype, float value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(base)[i] = value; return;
    case DType::bf16: static_cast<std::uint16_t*>(base)[i] = float_to_bf16(value); return;
    case DType::f16: static_cast<std::uint16_t*>(base)[i] = float_to_f16(value); return;
    case DType::i32: static_cast<std::int32_t*>(base)[i] = static_cast<std::int32_t>(value); return;
    case DType::i64: static_cast<std::int64_t*>(base)[i] = static_cast<std::int64_t>(value); return;
    case DType::q8_0:
    case DType::q4_0:
      fail("tensor", "a {} tensor's values are set block by block (to_dtype), not one at a time", dtype_name(dtype));
  }
}

double load_value(const void* base, std::int64_t i, DType dtype) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(base)[i]);
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(base)[i]);
    case DType::i32: return static_cast<const std::int32_t*>(base)[i];
    case DType::i64: return static_cast<double>(static_cast<const std::int64_t*>(base)[i]);
    case DType::q8_0:
    case DType::q4_0: break;  // read block by block (Tensor::to_floats)
  }
  return 0;
}
}  // namespace

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  const auto bytes = dtype_bytes(dtype, shape_numel(shape));
  return Tensor(make_impl(Storage::allocate(bytes, device), 0, shape, dtype));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const auto bytes = dtype_bytes(dtype, shape_numel(shape));
  return Tensor(make_impl(Storage::allocate(bytes, device, /*zero_fill=*/false), 0, shape, dtype));
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype) {
  Tensor t = zeros(shape, dtype);
  void* base = t.raw_mutable_data();
  for (std::int64_t i = 0; i < t.numel(); ++i) store_float(base, i, dtype, value);
  return t;
}

Tensor Tensor::from_floats(std::span<const float> values, const Shape& shape, DType dtype) {
  check(is_floating(dtype), "tensor", "from_floats needs a floating dtype, got {}", dtype_name(dtype));
  check(static_cast<std::int64_t>(values.size()) == shape_numel(shape), "tensor",
        "{} values given for shape {} ({} elements)", values.size(), shape_str(shape), shape_numel(shape));
  Tensor t = zeros(shape, dtype);
  void* base = t.raw_mutable_data();
  if (is_block_dtype(dtype)) {
    quantize_blocks(dtype, values.data(), base, t.numel());
    return t;
  }
  for (std::size_t i = 0; i < values.size(); ++i) store_float(base, static_cast<std::int64_t>(i), dtype, values[i]);
  return t;
}

Tensor Tensor::from_ints(std::span<const std::int64_t> values, const Shape& shape, DType dtype) {
  check(static_cast<std::int64_t>(values.size()) == shape_numel(shape), "tensor",
        "{} values given for shape {} ({} elements)", values.size(), shape_str(shape), shape_numel(shape));
  Tensor t = zeros(shape, dtype);
  void* base = t.raw_mutable_data();
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto index = static_cast<std::int64_t>(i);
    if (dtype == DType::i64) {
      static_cast<std::int64_t*>(base)[i] = values[i];
    } else {
      store_float(base, index, dtype, static_cast<float>(values[i]));
    }
  }
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, std::size_t byte_offset, const Shape& shape,
                            DType dtype) {
  const auto bytes = dtype_bytes(dtype, shape_numel(shape));
  check(byte_offset <= storage->nbytes() && bytes <= storage->nbytes() - byte_offset, "tensor",
        "a {} tensor of shape {} at byte {} needs {} bytes but the storage has {}", dtype_name(dtype),
        shape_str(shape), byte_offset, bytes, storage->nbytes());
  return Tensor(make_impl(std::move(storage), byte_offset, shape, dtype));
}

std::int64_t Tensor::size(std::int64_t d) const { return shape()[normalize_dim(d, dim(), "tensor")]; }

bool Tensor::is_contiguous() const {
  std::int64_t expected = 1;
  for (std::size_t i = shape().size(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, std::size_t byte_offset) const {
  check(shape.size() == strides.size(), "tensor", "shape {} and strides {} differ in rank", shape_str(shape),
        shape_str(strides));
  if (is_block_dtype(dtype()))
    check_whole_view(shape, strides, byte_offset);
  else
    check_view_in_storage(shape, strides, byte_offset);
  auto view = std::make_shared<TensorImpl>();
  view->storage = storage();
  view->byte_offset = byte_offset;
  view->shape = shape;
  view->strides = strides;
  view->dtype = dtype();
  return Tensor(std::move(view));
}

void Tensor::check_view_in_storage(const Shape& shape, const Shape& strides, std::size_t byte_offset) const {
  const auto element = static_cast<std::int64_t>(dtype_size(dtype()));
  check(byte_offset % static_cast<std::size_t>(element) == impl().byte_offset % static_cast<std::size_t>(element),
        "tensor", "view offset {} is not aligned to the {}-byte elements", byte_offset, element);
  std::int64_t low = 0, high = 0;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    check(shape[i] >= 0, "tensor", "negative size in shape {}", shape_str(shape));
    const std::int64_t extent = strides[i] * (shape[i] - 1);
    (extent < 0 ? low : high) += extent;
  }
  const auto first = static_cast<std::int64_t>(byte_offset) + low * element;
  const auto last = static_cast<std::int64_t>(byte_offset) + (high + 1) * element;
  check(shape_numel(shape) == 0 || (first >= 0 && last <= static_cast<std::int64_t>(storage()->nbytes())),
        "tensor", "view of shape {} strides {} at byte {} falls outside its storage of {} bytes", shape_str(shape),
        shape_str(strides), byte_offset, storage()->nbytes());
}

// A block dtype's values are not addressable one by one, so its tensors are seen whole: the
// stored matrix, or a permutation of its dims (a weight's transpose, for x Wᵀ and its gradient).
void Tensor::check_whole_view(const Shape& shape, const Shape& strides, std::size_t byte_offset) const {
  auto dims = [](const Shape& sizes, const Shape& steps) {
    std::vector<std::pair<std::int64_t, std::int64_t>> out;
    for (std::size_t i = 0; i < sizes.size(); ++i) out.emplace_back(sizes[i], steps[i]);
    std::sort(out.begin(), out.end());
    return out;
  };
  check(shape.size() == this->shape().size() && byte_offset == this->byte_offset() &&
            dims(shape, strides) == dims(this->shape(), this->strides()),
        "tensor",
        "a {} tensor {} can only be viewed whole (transposed), not as shape {} strides {}: its values are stored "
        "in blocks of {}",
        dtype_name(dtype()), shape_str(this->shape()), shape_str(shape), shape_str(strides), dtype_block(dtype()));
}

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  if (is_block_dtype(dtype())) {
    check(is_contiguous(), "tensor", "moving a {} tensor to {} needs it as stored, not transposed",
          dtype_name(dtype()), device_name(target));
    Tensor out = empty(shape(), dtype(), target);
    Storage::copy(stored_bytes(), byte_offset(), *out.storage(), 0, dtype_bytes(dtype(), numel()));
    return out;
  }
  const std::size_t element = dtype_size(dtype());
  Tensor out = empty(shape(), dtype(), target);
  const std::size_t bytes = static_cast<std::size_t>(numel()) * element;
  if (is_contiguous()) {
    Storage::copy(stored_bytes(), byte_offset(), *out.storage(), 0, bytes);
    return out;
  }
  if (device() != Device::cpu) {
    // A strided device view: its whole storage comes to the host, where the view is packed.
    check(target == Device::cpu, "tensor", "moving a strided {} tensor {} to {} needs it contiguous first",
          device_name(device()), shape_str(shape()), device_name(target));
    auto host = Storage::allocate(stored_bytes().nbytes(), Device::cpu, /*zero_fill=*/false);
    Storage::copy(stored_bytes(), 0, *host, 0, host->nbytes());
    return Tensor(make_impl(std::move(host), 0, shape(), dtype())).as_strided(shape(), strides(), byte_offset()).to(target);
  }
  Tensor packed = empty(shape(), dtype(), Device::cpu);
  const auto* src = static_cast<const std::byte*>(raw_data());
  auto* dst = static_cast<std::byte*>(packed.raw_mutable_data());
  std::int64_t k = 0;
  for_each_offset(shape(), strides(), [&](std::int64_t i) {
    std::memcpy(dst + static_cast<std::size_t>(k++) * element, src + static_cast<std::size_t>(i) * element, element);
  });
  Storage::copy(*packed.storage(), 0, *out.storage(), 0, bytes);
  return out;
}

std::vector<float> Tensor::to_floats() const {
  if (device() != Device::cpu) return to(Device::cpu).to_floats();
  if (is_block_dtype(dtype())) {
    check(is_contiguous(), "tensor", "reading a {} tensor's values needs it as stored, not transposed",
          dtype_name(dtype()));
    std::vector<float> out(static_cast<std::size_t>(numel()));
    dequantize_blocks(dtype(), raw_data(), out.data(), numel());
    return out;
  }
  std::vector<float> out;
  out.reserve(static_cast<std::size_t>(numel()));
  const void* base = raw_data();
  for_each_offset(shape(), strides(),
                  [&](std::int64_t i) { out.push_back(static_cast<float>(load_value(base, i, dtype()))); });
  return out;
}

std::vector<std::int64_t> Tensor::to_ints() const {
  if (device() != Device::cpu) return to(Device::cpu).to_ints();
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(numel()));
  const void* base = raw_data();
  for_each_offset(shape(), strides(), [&](std::int64_t i) {
    out.push_back(dtype() == DType::i64 ? static_cast<const std::int64_t*>(base)[i]
                                        : static_cast<std::int64_t>(load_value(base, i, dtype())));
  });
  return out;
}

float Tensor::item() const {
  check(numel() == 1, "tensor", "item() needs exactly one element, the tensor has shape {}", shape_str(shape()));
  return to_floats()[0];
}

Tensor& Tensor::set_requires_grad(bool value) {
  check(!value || is_floating(dtype()), "tensor", "only floating tensors can require grad, this one is {}",
        dtype_name(dtype()));
  check(is_leaf(), "tensor", "requires_grad can only be set on a leaf tensor");
  impl().requires_grad = value;
  return *this;
}

TensorImpl& Tensor::impl() const {
  check(impl_ != nullptr, "tensor", "use of an undefined tensor");
  return *impl_;
}

Storage& Tensor::stored_bytes() const {
  check(impl().storage != nullptr, "tensor",
        "this {} tensor has no storage: it is an autograd node's handle on an input whose values the node "
        "does not keep (record the op with BackwardReads::inputs to keep them)",
        shape_str(shape()));
  return *impl().storage;
}

void Tensor::check_access(std::size_t element_size) const {
  check(dtype_size(dtype()) == element_size, "tensor", "data access with a {}-byte type on a {} tensor",
        element_size, dtype_name(dtype()));
}

}  // namespace loracpp
