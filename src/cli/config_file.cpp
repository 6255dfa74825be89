#include "cli/config_file.h"
#include "io/json_file.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace loracpp::cli {

namespace {
std::string as_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }
}  // namespace

void apply_json_config(CLI::App& command, const std::string& path) {
  const nlohmann::json json = io::read_json_file(path, "config");
  check(json.is_object(), "config", "{} must hold a JSON object of option values", path);
  std::vector<std::string> valid;
  for (const CLI::Option* option : command.get_options()) {
    const std::string name = option->get_single_name();
    if (!option->get_lnames().empty() && name != "help" && name != "config") valid.push_back(name);
  }
  for (const auto& [raw_key, value] : json.items()) {
    std::string key = raw_key;
    std::replace(key.begin(), key.end(), '_', '-');
    CLI::Option* option = nullptr;
    for (CLI::Option* o : command.get_options())
      if (o->check_lname(key) && key != "config") option = o;
    check(option != nullptr, "config", "unknown key '{}' in {}; valid keys: {}", raw_key, path, fmt::join(valid, ", "));
    if (option->count() > 0) continue;  // the command line wins
    try {
      if (value.is_array()) {
        for (const auto& item : value) option->add_result(as_text(item));
      } else if (value.is_boolean() && option->get_type_size() == 0) {
        if (!value.get<bool>()) continue;
        option->add_result("true");
      } else {
        option->add_result(as_text(value));
      }
      option->run_callback();
    } catch (const CLI::Error& e) {
      fail("config", "key '{}' in {}: {}", raw_key, path, e.what());
    }
  }
}

}  // namespace loracpp::cli
