#pragma once
// The data options `train`, `eval` and `data` share, and the one path from files to datasets:
// read records (any format), split off validation, render and tokenize, pack.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "data/token_dataset.h"

namespace loracpp::cli {

struct DataArgs {
  std::string chat_template, train_on = "completion", packing, columns;
  bool skip_bad_lines = false, one_per_line = false;
  void add_to(CLI::App& app);
  nlohmann::ordered_json to_json() const;  // for run fingerprints
};

struct PreparedData {
  data::RecordFormat format = data::RecordFormat::text;
  data::Packing packing = data::Packing::stream;
  std::optional<data::ChatTemplate> chat_template;
  std::vector<data::Record> train_records, validation_records;
  std::int64_t skipped_lines = 0;
  std::vector<std::string> skipped_reasons;
  data::TokenDataset train;
  std::optional<data::TokenDataset> validation;
};

// validation_path (a second file) wins over validation_fraction; with neither, no validation.
// Only the validation side is kept when validation_only (as `lora eval --validation-fraction`).
PreparedData prepare_data(const DataArgs& args, const std::string& path, const std::string& validation_path,
                          double validation_fraction, std::uint64_t seed, const tokenizers::Tokenizer& tokenizer,
                          const std::string& model, std::int64_t seq_len, bool validation_only = false);

// The tokenizer of a model (any format), or a tokenizer.json / its folder.
std::unique_ptr<tokenizers::Tokenizer> open_tokenizer(const std::filesystem::path& path);

// One line on stderr: examples, tokens, sequences, masked and truncated shares.
void print_data_summary(const PreparedData& data, std::int64_t seq_len);

}  // namespace loracpp::cli
