#include "core/storage.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace loracpp {

std::shared_ptr<Storage> Storage::allocate(std::size_t nbytes, Device device, bool zero_fill) {
  check(device == Device::cpu, "storage", "cannot allocate on {}: this build has no {} backend",
        device_name(device), device_name(device));
  std::shared_ptr<Storage> storage(new Storage());
  const std::size_t rounded = (std::max<std::size_t>(nbytes, 1) + 63) / 64 * 64;
  void* data = std::aligned_alloc(64, rounded);
  if (!data) fail("storage", "out of memory allocating {} bytes", nbytes);
  if (zero_fill) std::memset(data, 0, rounded);
  storage->data_ = static_cast<std::byte*>(data);
  storage->nbytes_ = nbytes;
  return storage;
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
  return data_;
}

Storage::~Storage() {
  if (mapped_) {
    if (data_) ::munmap(data_, nbytes_);
  } else {
    std::free(data_);
  }
}

}  // namespace loracpp
