#include "io/json_file.h"

#include <fstream>

#include "core/error.h"

namespace loracpp::io {

nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view place) {
  std::ifstream in(path);
  check(in.good(), place, "cannot read {}", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(place, "{} is not valid JSON: {}", path.string(), e.what());
  }
}

}  // namespace loracpp::io
