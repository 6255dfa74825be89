#pragma once
// Reading a JSON file a user handed over: a missing or unreadable file and invalid JSON each get
// one error naming the place and the file.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

namespace loracpp::io {

nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view place);

}  // namespace loracpp::io
