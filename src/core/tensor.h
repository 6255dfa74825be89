#pragma once
// Tensor: a typed, strided view of a Storage, plus the autograd state of that view.
// Copies of a Tensor are handles to the same tensor (as in PyTorch); views share storage.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace loracpp {

namespace autograd {
struct Node;
}

using Shape = std::vector<std::int64_t>;

std::int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
// A shape as it reads in a message, "[2, 3]", formatted only when a message is built: checks
// run on every tensor and view, and one that passes should format nothing. It refers to the shape
// (null reads "undefined"), so use it within the expression that makes it.
struct ShapeText {
  const Shape* shape;
};
inline ShapeText shape_str(const Shape& shape) { return {&shape}; }
// Resolves a possibly negative dimension index; throws "[place] dim d out of range for rank r".
std::int64_t normalize_dim(std::int64_t dim, std::int64_t rank, std::string_view place);

class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  std::size_t byte_offset = 0;
  Shape shape;
  Shape strides;  // in elements
  DType dtype = DType::f32;
  // Autograd: a leaf that requires grad accumulates into grad; a tensor made by a recorded op
  // points at the node that made it.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Zero-filled, contiguous.
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  // Contiguous, contents undefined: for outputs a kernel writes in full.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, float value, DType dtype = DType::f32);
  // Values converted to dtype (a floating dtype).
  static Tensor from_floats(std::span<const float> values, const Shape& shape, DType dtype = DType::f32);
  // Values converted to dtype (any dtype).
  static Tensor from_ints(std::span<const std::int64_t> values, const Shape& shape, DType dtype = DType::i64);
  // A contiguous view of existing bytes (for example a mapped file); checks the bounds.
  static Tensor from_storage(std::shared_ptr<Storage> storage, std::size_t byte_offset, const Shape& shape,
                             DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  std::int64_t dim() const { return static_cast<std::int64_t>(impl().shape.size()); }
  std::int64_t size(std::int64_t d) const;
  std::int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return stored_bytes().device(); }
  bool is_contiguous() const;
  bool read_only() const { return stored_bytes().read_only(); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  std::size_t byte_offset() const { return impl().byte_offset; }

  // A view with other shape/strides/offset on the same storage, no autograd; bounds are checked.
  Tensor as_strided(const Shape& shape, const Shape& strides, std::size_t byte_offset) const;

  const void* raw_data() const { return stored_bytes().data() + impl().byte_offset; }
  void* raw_mutable_data() { return stored_bytes().mutable_data() + impl().byte_offset; }
  template <class T>
  const T* data() const {
    check_access(sizeof(T));
    return static_cast<const T*>(raw_data());
  }
  template <class T>
  T* mutable_data() {
    check_access(sizeof(T));
    return static_cast<T*>(raw_mutable_data());
  }

  // A contiguous copy on device, or this tensor itself when it is there already. The copy is a new
  // leaf: no autograd history, and it does not require grad. A strided cuda tensor goes only to
  // the host this way; between devices, make it contiguous first (ops::contiguous).
  Tensor to(Device device) const;

  // Host copies in logical (row-major) order, whatever the strides (a cuda tensor is copied to the
  // host first); for tests, I/O and printing.
  std::vector<float> to_floats() const;
  std::vector<std::int64_t> to_ints() const;
  float item() const;

  // Autograd state.
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as trainable; only floating tensors can be.
  Tensor& set_requires_grad(bool value = true);
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& grad) { impl().grad = grad.impl_; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same_as(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  // as_strided's checks: a view inside the storage; for a block dtype, the whole tensor.
  void check_view_in_storage(const Shape& shape, const Shape& strides, std::size_t byte_offset) const;
  void check_whole_view(const Shape& shape, const Shape& strides, std::size_t byte_offset) const;
  void check_access(std::size_t element_size) const;
  // Throws for a tensor without storage (an autograd node's handle on an input it does not keep).
  Storage& stored_bytes() const;
  std::shared_ptr<TensorImpl> impl_;
};

// Calls fn(element_offset) for each element of shape in row-major order, given strides.
template <class Fn>
void for_each_offset(const Shape& shape, const Shape& strides, Fn&& fn) {
  const std::size_t rank = shape.size();
  if (shape_numel(shape) == 0) return;
  std::vector<std::int64_t> index(rank, 0);
  std::int64_t offset = 0;
  while (true) {
    fn(offset);
    std::size_t d = rank;
    while (d > 0) {
      --d;
      if (++index[d] < shape[d]) {
        offset += strides[d];
        break;
      }
      offset -= strides[d] * (shape[d] - 1);
      index[d] = 0;
      if (d == 0) return;
    }
    if (rank == 0) return;
  }
}

// A tensor's shape in a message, "undefined" for a tensor that holds nothing.
inline ShapeText shape_str(const Tensor& tensor) { return {tensor.defined() ? &tensor.shape() : nullptr}; }

}  // namespace loracpp

template <>
struct fmt::formatter<loracpp::ShapeText> : fmt::formatter<std::string_view> {
  template <class Context>
  auto format(const loracpp::ShapeText& text, Context& context) const {
    if (!text.shape) return fmt::format_to(context.out(), "undefined");
    return fmt::format_to(context.out(), "[{}]", fmt::join(*text.shape, ", "));
  }
};
