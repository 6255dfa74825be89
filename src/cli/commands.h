#pragma once
// Each subcommand: its options, how it registers them with CLI11, and what it runs.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "cli/data_args.h"

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
  std::string model, tokenizer, prompt, base_dtype;  // empty: the weights as the file stores them
  std::vector<std::string> adapters;  // DIR[:SCALE]
  std::int64_t steps = 256;
  float temperature = 1.0f, top_p = 1.0f;
  std::int64_t top_k = 0;
  std::uint64_t seed = 42;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct TrainCommand : Command {
  std::string model, tokenizer, data, validation_data, out, config_file, resume, targets = "q_proj,v_proj", init = "default";
  std::string schedule = "cosine", bias = "none", base_dtype = "f32", device = "cpu";
  bool full = false, overwrite = false, rslora = false, gradient_checkpointing = false;
  double validation_fraction = 0.1;
  std::int64_t r = 8, seq_len = 256, steps = 100, batch_size = 16, micro_batch_size = 0, warmup = 0;
  std::int64_t eval_every = 0, eval_batches = 0, early_stopping = 0, save_every = 0, stop_at = 0;
  std::vector<std::int64_t> layers;
  std::vector<std::string> modules_to_save;
  float alpha = 16, dropout = 0, lr = 1e-3f, weight_decay = 0, max_grad_norm = 1, min_lr_ratio = 0;
  std::uint64_t seed = 0;
  DataArgs data_args;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct EvalCommand : Command {
  std::string model, tokenizer, data, base_dtype;  // empty: the weights as the file stores them
  std::vector<std::string> adapters;
  std::int64_t seq_len = 256, batch_size = 8;
  double validation_fraction = 0;
  std::uint64_t seed = 0;
  DataArgs data_args;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct MergeCommand : Command {
  std::string model, out, format, dtype;
  std::vector<std::string> adapters;
  bool unsafe = false;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct InitCommand : Command {
  std::string config, out, tokenizer = "bytes";
  std::uint64_t seed = 0;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct DataCommand : Command {
  std::string path, model, validation_data;
  std::int64_t seq_len = 256, preview = 3;
  bool json = false;
  DataArgs data_args;
  void add_to(CLI::App& parent) override;
  int run() override;
};

struct TokenizeCommand : Command {
  std::string model, text, file;
  bool decode = false;
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
