#pragma once
// Outputs are written to a temporary file beside the target and renamed over it, so a crash or an
// error never leaves a half-written file and never damages an existing one.
#include <filesystem>
#include <functional>
#include <ostream>

namespace loracpp::io {

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write);

}  // namespace loracpp::io
