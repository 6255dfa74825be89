// The `lora` command: subcommands over the engine; parsing and printing only.
#include <cstdio>
#include <memory>
#include <vector>

#include "cli/commands.h"
#include "loracpp/loracpp.h"

int main(int argc, char** argv) {
  CLI::App app{"loracpp: LoRA fine-tuning engine"};
  app.set_version_flag("--version", loracpp::kVersion);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a repeated flag: the last wins
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Threads for BLAS and kernels (default: all cores)")->check(CLI::PositiveNumber);

  std::vector<std::unique_ptr<loracpp::cli::Command>> commands;
  commands.push_back(std::make_unique<loracpp::cli::InspectCommand>());
  commands.push_back(std::make_unique<loracpp::cli::GenerateCommand>());
  commands.push_back(std::make_unique<loracpp::cli::ConvertCommand>());
  commands.push_back(std::make_unique<loracpp::cli::TrainCommand>());
  commands.push_back(std::make_unique<loracpp::cli::EvalCommand>());
  commands.push_back(std::make_unique<loracpp::cli::MergeCommand>());
  commands.push_back(std::make_unique<loracpp::cli::InitCommand>());
  commands.push_back(std::make_unique<loracpp::cli::TokenizeCommand>());
  commands.push_back(std::make_unique<loracpp::cli::DataCommand>());
  commands.push_back(std::make_unique<loracpp::cli::DemoCommand>());
  for (auto& command : commands) command->add_to(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    // An unknown or malformed flag: also list the valid ones of the command it was given to.
    if (code != 0) {
      const auto parsed = app.get_subcommands();
      std::fputs((parsed.empty() ? app.help() : parsed.back()->help()).c_str(), stderr);
    }
    return code;
  }
  try {
    if (threads > 0) loracpp::set_num_threads(threads);
    for (auto& command : commands)
      if (*command->app) return command->run();
  } catch (const loracpp::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
