#pragma once
// Scratch memory a thread keeps from one kernel call to the next. A kernel's buffers of a few
// hundred KB, allocated and freed on every call, were handed back to the system by the C library
// each time (unmapped, or trimmed off the top of its heap), and every page of them faulted in
// afresh on first touch: some 4600 page faults in each training step of the tiny model, most of
// them the attention's bf16 copies.
#include <cstddef>
#include <memory>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

template <class T>
class Scratch {
 public:
  // At least n elements, grown (never shrunk) as needed; their values are whatever the last user
  // left, or uninitialised.
  T* at_least(i64 n) {
    if (n > size_) {
      data_ = std::make_unique_for_overwrite<T[]>(static_cast<std::size_t>(n));
      size_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<T[]> data_;
  i64 size_ = 0;
};

}  // namespace loracpp::backend::cpu
