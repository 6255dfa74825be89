#pragma once
// A JSON file of option values for a subcommand (`-c run.json`): keys are the long option names
// (with '_' or '-'), values strings, numbers, booleans or lists. Options given on the command
// line win. Unknown keys are refused with the valid ones listed.
#include <CLI/CLI.hpp>
#include <string>

namespace loracpp::cli {

void apply_json_config(CLI::App& command, const std::string& path);

}  // namespace loracpp::cli
