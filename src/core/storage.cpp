#include "core/storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#if defined(LORACPP_WITH_CUDA)
#include "backend/cuda/cuda_backend.h"  // device memory comes from the CUDA backend's caching allocator
#endif

namespace loracpp {

namespace {

// Blocks from kHugePage up are mapped on their own, aligned to it, and advised to the kernel for
// transparent huge pages (where it grants them only on request): the first touch of each 2 MiB
// then faults once instead of 512 times. On a paravirtualised 2-core VM each small fault cost about
// 12 us, and a tiny LoRA step's first pass through fresh blocks spent 4-10 ms per frozen product
// in faults; the bench's first timed step ran 5% slower than the later ones for it.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

void* allocate_block(std::size_t size) {
  if (size < kHugePage) return std::aligned_alloc(64, size);
  const std::size_t mapped = size + kHugePage;  // room to align the start
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage, end = aligned + size;
  if (aligned > start) ::munmap(raw, aligned - start);
  if (start + mapped > end) ::munmap(reinterpret_cast<void*>(end), start + mapped - end);
  ::madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);  // advice only: without it, small pages
  return reinterpret_cast<void*>(aligned);
}

// Frees a block from allocate_block of that size.
void free_block(void* block, std::size_t size) {
  if (size < kHugePage) {
    std::free(block);
  } else {
    ::munmap(block, size);
  }
}

// Tensors come and go by the thousand per training step, many of them megabytes large, and each
// step asks for the same sizes again. Freed large blocks are kept (up to a cap) and handed out
// again for the same rounded size, so their pages are not faulted in afresh every step.
class BlockCache {
 public:
  // Smaller blocks stay with malloc. From 1 MiB up only, the bf16 copies of tiny's activations
  // ([1024, 288], 576 KiB) came from malloc, whose heap gave their pages back and faulted them in
  // again: 665 faults a tiny bf16 step at about 12 us each on a paravirtualised VM; 50 from 64 KiB.
  static constexpr std::size_t kMinCached = 1 << 16;
  static constexpr std::size_t kGranule = 1 << 16;  // sizes rounded from 1 MiB up (4 KiB below)
  // Cached bytes at most: room for a whole training step's activations, so each step reuses the
  // last one's blocks instead of faulting in fresh pages (a 2 GB cap cost a third of the speed of
  // an all-linear LoRA step on the small preset).
  static constexpr std::size_t kCap = std::size_t{16} << 30;

  static std::size_t rounded(std::size_t nbytes) {
    const std::size_t n = std::max<std::size_t>(nbytes, 1);
    const std::size_t granule = n >= (std::size_t{1} << 20) ? kGranule : n >= kMinCached ? 4096 : 64;
    return (n + granule - 1) / granule * granule;
  }
  // A cached block of at least size bytes and at most an eighth more (its size goes to *taken),
  // or nullptr. Taking a slightly larger block keeps a step from holding one set of blocks per
  // size it has ever asked for.
  void* take(std::size_t size, std::size_t* taken) {
    if (size < kMinCached) return nullptr;
    std::lock_guard lock(mutex_);
    auto it = blocks_.lower_bound(size);
    if (it == blocks_.end() || it->first > size + size / 8) return nullptr;
    void* block = it->second;
    *taken = it->first;
    cached_ -= it->first;
    blocks_.erase(it);
    return block;
  }
  void trim() {
    std::lock_guard lock(mutex_);
    for (auto& [size, block] : blocks_) free_block(block, size);
    blocks_.clear();
    cached_ = 0;
  }
  void give(void* block, std::size_t size) {
    if (size >= kMinCached) {
      std::lock_guard lock(mutex_);
      if (cached_ + size <= kCap) {
        blocks_.emplace(size, block);
        cached_ += size;
        return;
      }
    }
    free_block(block, size);
  }

 private:
  std::mutex mutex_;
  std::multimap<std::size_t, void*> blocks_;
  std::size_t cached_ = 0;
};

BlockCache& block_cache() {
  static auto* cache = new BlockCache();  // never destroyed: storages may outlive static destruction
  return *cache;
}

}  // namespace

void Storage::release_cached_blocks() { block_cache().trim(); }

std::string Storage::unavailable_reason(Device device) {
  if (device == Device::cpu) return {};
#if defined(LORACPP_WITH_CUDA)
  return backend::cuda::available() ? std::string() : std::string(backend::cuda::unavailable_reason());
#else
  return "this build has no CUDA backend (nvcc was not found at build time)";
#endif
}

std::shared_ptr<Storage> Storage::allocate(std::size_t nbytes, Device device, bool zero_fill) {
  if (device == Device::cuda) {
#if defined(LORACPP_WITH_CUDA)
    check(backend::cuda::available(), "storage", "cannot allocate on cuda: {}", backend::cuda::unavailable_reason());
    std::shared_ptr<Storage> storage(new Storage());
    storage->data_ = static_cast<std::byte*>(backend::cuda::allocate(nbytes));
    storage->nbytes_ = nbytes;
    storage->device_ = Device::cuda;
    if (zero_fill) backend::cuda::fill_zero(storage->data_, nbytes);
    return storage;
#else
    fail("storage", "cannot allocate on cuda: this build has no CUDA backend (nvcc was not found at build time)");
#endif
  }
  std::shared_ptr<Storage> storage(new Storage());
  std::size_t size = BlockCache::rounded(nbytes);
  void* data = block_cache().take(size, &size);
  if (!data) data = allocate_block(size);
  if (!data) fail("storage", "out of memory allocating {} bytes", nbytes);
  if (zero_fill) std::memset(data, 0, size);
  storage->data_ = static_cast<std::byte*>(data);
  storage->nbytes_ = nbytes;
  storage->block_bytes_ = size;
  return storage;
}

void Storage::copy(const Storage& src, std::size_t src_offset, Storage& dst, std::size_t dst_offset, std::size_t n) {
  check(src_offset + n <= src.nbytes_ && dst_offset + n <= dst.nbytes_, "storage",
        "a copy of {} bytes runs past the end of its source ({} + {}) or destination ({} + {})", n, src_offset,
        src.nbytes_, dst_offset, dst.nbytes_);
  if (n == 0) return;
  const std::byte* from = src.data_ + src_offset;
  std::byte* to = dst.mutable_data() + dst_offset;
  if (src.device_ == Device::cpu && dst.device_ == Device::cpu) {
    std::memcpy(to, from, n);
    return;
  }
#if defined(LORACPP_WITH_CUDA)
  if (src.device_ == Device::cpu) {
    backend::cuda::copy_to_device(to, from, n);
  } else if (dst.device_ == Device::cpu) {
    backend::cuda::copy_to_host(to, from, n);
  } else {
    backend::cuda::copy_on_device(to, from, n);
  }
#else
  fail("storage", "cannot copy to or from cuda: this build has no CUDA backend");
#endif
}

std::shared_ptr<Storage> Storage::map_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("storage", "cannot open {}: {}", path.string(), std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    fail("storage", "cannot stat {}: {}", path.string(), std::strerror(error));
  }
  std::shared_ptr<Storage> storage(new Storage());
  storage->nbytes_ = static_cast<std::size_t>(info.st_size);
  storage->mapped_ = true;
  if (storage->nbytes_ > 0) {
    void* data = ::mmap(nullptr, storage->nbytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int error = errno;
    ::close(fd);
    if (data == MAP_FAILED) fail("storage", "cannot map {}: {}", path.string(), std::strerror(error));
    storage->data_ = static_cast<std::byte*>(data);
  } else {
    ::close(fd);
  }
  return storage;
}

std::byte* Storage::mutable_data() {
  check(!mapped_, "storage", "this storage is a read-only file mapping and cannot be written");
  version_.fetch_add(1, std::memory_order_relaxed);
  return data_;
}

Storage::~Storage() {
  if (mapped_) {
    if (data_) ::munmap(data_, nbytes_);
  } else if (device_ == Device::cuda) {
#if defined(LORACPP_WITH_CUDA)
    backend::cuda::release(data_, nbytes_);
#endif
  } else {
    block_cache().give(data_, block_bytes_);
  }
}

}  // namespace loracpp
