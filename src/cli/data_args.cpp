#include "cli/data_args.h"

#include <fmt/core.h>

#include "core/error.h"
#include "models/registry.h"
#include "tokenizers/tokenizer_json.h"

namespace loracpp::cli {

void DataArgs::add_to(CLI::App& app) {
  app.add_option("--chat-template", chat_template,
                 "Chat template for 'messages' data: " + data::known_chat_templates() + " (default: the model's)");
  app.add_option("--train-on", train_on, "Tokens in the loss: completion (completions, responses, assistant turns, "
                                         "labels) or all")
      ->check(CLI::IsMember({"completion", "all"}));
  app.add_option("--packing", packing, "stream (plain text default), packed (default otherwise: whole examples per "
                                       "sequence, no attention across them) or padded")
      ->check(CLI::IsMember({"stream", "packed", "padded"}));
  app.add_option("--columns", columns, "Map fields to the file's keys/columns: FIELD=NAME,... "
                                       "(fields: text, label, prompt, completion, messages, instruction, input, output)");
  app.add_flag("--skip-bad-lines", skip_bad_lines, "Skip and count malformed JSONL lines or CSV rows");
  app.add_flag("--one-per-line", one_per_line, "In .txt data, every non-empty line is an example");
}

nlohmann::ordered_json DataArgs::to_json() const {
  return {{"chat_template", chat_template}, {"train_on", train_on}, {"packing", packing},
          {"columns", columns},             {"skip_bad_lines", skip_bad_lines}, {"one_per_line", one_per_line}};
}

PreparedData prepare_data(const DataArgs& args, const std::string& path, const std::string& validation_path,
                          double validation_fraction, std::uint64_t seed, const tokenizers::Tokenizer& tokenizer,
                          const std::string& model, std::int64_t seq_len, bool validation_only) {
  const data::ReadOptions read{.skip_bad_lines = args.skip_bad_lines, .columns = data::parse_column_map(args.columns)};
  auto records = data::read_records(path, read, args.one_per_line);
  PreparedData out;
  out.format = records.format;
  out.skipped_lines = records.skipped;
  out.skipped_reasons = records.skipped_reasons;
  out.train_records = std::move(records.records);
  if (!validation_path.empty()) {
    auto validation = data::read_records(validation_path, read, args.one_per_line);
    check(validation.format == out.format, "data", "{} holds {} records but {} holds {} records", validation_path,
          data::format_name(validation.format), path, data::format_name(out.format));
    out.validation_records = std::move(validation.records);
    out.skipped_lines += validation.skipped;
  } else if (validation_fraction > 0) {
    std::tie(out.train_records, out.validation_records) =
        data::split_items(std::move(out.train_records), validation_fraction, seed);
  }
  if (validation_only) out.train_records.clear();

  data::ExampleOptions options{.train_on_prompt = args.train_on == "all"};
  if (out.format == data::RecordFormat::chat)
    options.chat_template = data::choose_chat_template(args.chat_template, tokenizer.chat_template(), model);
  else if (!args.chat_template.empty())
    data::parse_chat_template(args.chat_template);  // a misspelt name is an error even when unused
  out.chat_template = options.chat_template;
  out.packing = !args.packing.empty() ? data::parse_packing(args.packing)
                : out.format == data::RecordFormat::text ? data::Packing::stream
                                                         : data::Packing::packed;
  const std::int64_t pad = std::max<std::int64_t>(tokenizer.eos_id(), 0);
  if (!out.train_records.empty())
    out.train = data::TokenDataset(data::tokenize_records(out.train_records, out.format, tokenizer, options), seq_len,
                                   out.packing, pad, path);
  if (!out.validation_records.empty())
    out.validation.emplace(data::tokenize_records(out.validation_records, out.format, tokenizer, options), seq_len,
                           out.packing, pad, validation_path.empty() ? "validation data" : validation_path);
  return out;
}

std::unique_ptr<tokenizers::Tokenizer> open_tokenizer(const std::filesystem::path& path) {
  if (path.filename() == "tokenizer.json") return tokenizers::load_tokenizer_json(path.parent_path());
  if (std::filesystem::is_directory(path) && !std::filesystem::exists(path / "config.json") &&
      std::filesystem::exists(path / "tokenizer.json"))
    return tokenizers::load_tokenizer_json(path);
  auto loaded = models::load_model(path);
  check(loaded.tokenizer != nullptr, "tokenizer", "no tokenizer found for {}", path.string());
  return std::move(loaded.tokenizer);
}

void print_data_summary(const PreparedData& data, std::int64_t seq_len) {
  const auto& t = data.train;
  fmt::print(stderr, "data: {} {} records -> {} tokens in {} sequences of {} ({}); {} targets trained",
             data.train_records.size(), data::format_name(data.format), t.tokens(), t.sequences(), seq_len,
             data::packing_name(data.packing), t.trained_tokens());
  if (t.truncated_examples() > 0)
    fmt::print(stderr, "; {} examples truncated ({} tokens cut)", t.truncated_examples(), t.truncated_tokens());
  if (data.skipped_lines > 0) fmt::print(stderr, "; {} bad lines skipped", data.skipped_lines);
  fmt::print(stderr, "; validation: {} records\n", data.validation_records.size());
}

}  // namespace loracpp::cli
