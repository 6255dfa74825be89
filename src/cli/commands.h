#pragma once
// Each subcommand: its options, how it registers them with CLI11, and what it runs.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace loracpp::cli {

struct Command {
  virtual ~Command() = default;
  virtual void add_to(CLI::App& app) = 0;
  virtual int run() = 0;
  CLI::App* app = nullptr;
};

struct DemoCommand : Command {
  int steps = 200;
  int rank = 4;
  std::uint64_t seed = 7;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct GenerateCommand : Command {
  std::string model, tokenizer, prompt;
  std::int64_t steps = 256;
  float temperature = 1.0f, top_p = 1.0f;
  std::int64_t top_k = 0;
  std::uint64_t seed = 42;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct InspectCommand : Command {
  std::string model;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct ConvertCommand : Command {
  std::string model, out, format, dtype = "f32";
  void add_to(CLI::App& parent) override;
  int run() override;
};

}  // namespace loracpp::cli
