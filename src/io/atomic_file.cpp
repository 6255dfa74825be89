#include "io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace loracpp::io {

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  check(std::filesystem::is_directory(dir), "io", "cannot write {}: folder {} does not exist", path.string(),
        dir.string());
  const std::filesystem::path temp = dir / fmt::format(".{}.tmp.{}", path.filename().string(), ::getpid());
  try {
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      check(out.good(), "io", "cannot write {}: {}", temp.string(), std::strerror(errno));
      write(out);
      out.flush();
      check(out.good(), "io", "writing {} failed: {}", temp.string(), std::strerror(errno));
    }
    std::error_code error;
    std::filesystem::rename(temp, path, error);
    check(!error, "io", "cannot move {} into place as {}: {}", temp.string(), path.string(), error.message());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
}

}  // namespace loracpp::io
