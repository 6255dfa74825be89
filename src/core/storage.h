#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "core/device.h"

namespace loracpp {

// A block of bytes: either owned (64-byte aligned, zero-filled) or a read-only memory map of a
// file, so frozen weights can be used in place without a copy.
class Storage {
 public:
  // Zero-filled unless zero_fill is false (for outputs that are about to be fully written).
  static std::shared_ptr<Storage> allocate(std::size_t nbytes, Device device = Device::cpu, bool zero_fill = true);
  static std::shared_ptr<Storage> map_file(const std::filesystem::path& path);
  // Freed host blocks are kept for reuse by later allocations of the same size; this returns them
  // to the system (after a one-off conversion whose blocks no step will ask for again).
  static void release_cached_blocks();
  // Why memory cannot be allocated on device here (no GPU, or a build without the CUDA backend);
  // empty when it can.
  static std::string unavailable_reason(Device device);
  // Copies n bytes between storages on any devices (cpu and cuda, either way), src_offset and
  // dst_offset in bytes; a copy that touches the device returns once the bytes have arrived.
  static void copy(const Storage& src, std::size_t src_offset, Storage& dst, std::size_t dst_offset, std::size_t n);

  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  const std::byte* data() const { return data_; }
  // Throws for a read-only mapping: frozen files are never written through. Each call counts as a
  // write: version() changes, so caches derived from the contents know they may be stale.
  std::byte* mutable_data();
  std::uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool read_only() const { return mapped_; }

 private:
  Storage() = default;
  std::byte* data_ = nullptr;
  std::size_t nbytes_ = 0;
  std::size_t block_bytes_ = 0;  // of an owned host block: its allocated size, at least nbytes_
  Device device_ = Device::cpu;
  bool mapped_ = false;
  std::atomic<std::uint64_t> version_{0};
};

}  // namespace loracpp
