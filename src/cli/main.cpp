// The `lora` command: subcommands over the engine; parsing and printing only.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/core.h>

#include "cli/commands.h"
#include "loracpp/loracpp.h"

int main(int argc, char** argv) {
  CLI::App app{"loracpp: LoRA fine-tuning engine"};
  app.set_version_flag("--version", loracpp::kVersion);
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Threads for BLAS and kernels (default: all cores)")->check(CLI::PositiveNumber);

  loracpp::cli::DemoOptions demo;
  auto* demo_cmd = app.add_subcommand("demo", "Train a LoRA adapter on a frozen linear layer (synthetic task)");
  demo_cmd->add_option("--steps", demo.steps, "Optimiser steps")->check(CLI::PositiveNumber);
  demo_cmd->add_option("--rank", demo.rank, "Adapter rank r")->check(CLI::PositiveNumber);
  demo_cmd->add_option("--seed", demo.seed, "Random seed");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (threads > 0) loracpp::set_num_threads(threads);
    if (*demo_cmd) return loracpp::cli::run_demo(demo);
  } catch (const loracpp::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
