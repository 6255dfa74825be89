// The `lora` command: subcommands over the engine; parsing and printing only.
#include <cstdio>
#include <memory>
#include <vector>

#include "cli/commands.h"
#include "loracpp/loracpp.h"

int main(int argc, char** argv) {
  CLI::App app{"loracpp: LoRA fine-tuning engine"};
  app.set_version_flag("--version", loracpp::kVersion);
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Threads for BLAS and kernels (default: all cores)")->check(CLI::PositiveNumber);

  std::vector<std::unique_ptr<loracpp::cli::Command>> commands;
  commands.push_back(std::make_unique<loracpp::cli::InspectCommand>());
  commands.push_back(std::make_unique<loracpp::cli::GenerateCommand>());
  commands.push_back(std::make_unique<loracpp::cli::ConvertCommand>());
  commands.push_back(std::make_unique<loracpp::cli::DemoCommand>());
  for (auto& command : commands) command->add_to(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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
