// `lora data`: what a data file becomes for a model: examples, tokens, how much is masked,
// truncated or padded, label counts, and the first examples with their masked tokens marked.
#include <fmt/core.h>

#include "cli/commands.h"
#include "core/error.h"
#include "data/examples.h"

namespace loracpp::cli {

namespace {

// The example's text, with the tokens outside the loss inside [[ ]]; BOS and EOS spelled out.
std::string marked_text(const data::TokenizedExample& e, const tokenizers::Tokenizer& tokenizer) {
  std::string out;
  bool open = false;
  std::int64_t previous = tokenizer.bos_id();
  for (std::size_t i = 0; i < e.ids.size(); ++i) {
    const bool masked = e.trained[i] == 0;
    if (masked != open) {
      out += masked ? "[[" : "]]";
      open = masked;
    }
    const auto id = e.ids[i];
    out += id == tokenizer.bos_id() ? "<bos>" : id == tokenizer.eos_id() ? "<eos>" : tokenizer.decode_piece(previous, id);
    previous = id;
  }
  if (open) out += "]]";
  return out;
}

double share(std::int64_t part, std::int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

}  // namespace

void DataCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("data", "Show what a data file becomes for a model: tokens, masks, truncation, labels");
  app->add_option("data", path, "Data file: .txt, .jsonl, .csv or .tsv")->required();
  app->add_option("--model,-m", model, "Model (or tokenizer.json) whose tokenizer and chat template to use")
      ->required();
  app->add_option("--validation-data", validation_data, "A validation file to check as well");
  app->add_option("--seq-len", seq_len, "Tokens per sequence")->check(CLI::PositiveNumber);
  app->add_option("--preview", preview, "Examples to show")->check(CLI::NonNegativeNumber);
  app->add_flag("--json", json, "Print the statistics as one JSON object");
  data_args.add_to(*app);
}

int DataCommand::run() {
  const auto tokenizer = open_tokenizer(model);
  const auto prepared = prepare_data(data_args, path, validation_data, 0, 0, *tokenizer, model, seq_len);
  const auto& t = prepared.train;
  const std::int64_t before_truncation = t.tokens() + t.truncated_tokens();
  // Every example token but the first of each example is a target; those outside the loss are masked.
  const std::int64_t targets = t.tokens() - (prepared.packing == data::Packing::stream ? 0 : t.examples());
  nlohmann::ordered_json stats = {
      {"file", path},
      {"format", data::format_name(prepared.format)},
      {"examples", t.examples()},
      {"skipped_lines", prepared.skipped_lines},
      {"tokens", t.tokens()},
      {"sequences", t.sequences()},
      {"seq_len", seq_len},
      {"packing", data::packing_name(prepared.packing)},
      {"trained_targets", t.trained_tokens()},
      {"masked_fraction", 1.0 - share(t.trained_tokens(), std::max<std::int64_t>(targets, 1))},
      {"truncated_examples", t.truncated_examples()},
      {"truncated_tokens", t.truncated_tokens()},
      {"truncated_fraction", share(t.truncated_tokens(), before_truncation)},
      {"padding_fraction", share(t.padding(), t.sequences() * seq_len)}};
  if (prepared.chat_template) stats["chat_template"] = data::chat_template_name(*prepared.chat_template);
  if (prepared.format == data::RecordFormat::labelled) {
    data::Records records;
    records.records = prepared.train_records;
    stats["labels"] = data::label_counts(records);
  }
  if (prepared.validation) stats["validation_examples"] = prepared.validation->examples();
  if (json) {
    fmt::print("{}\n", stats.dump());
    return 0;
  }
  fmt::print("{}: {} examples ({}), {} bad lines skipped\n", path, t.examples(), data::format_name(prepared.format),
             prepared.skipped_lines);
  for (const auto& reason : prepared.skipped_reasons) fmt::print("  skipped {}\n", reason);
  if (prepared.chat_template) fmt::print("chat template: {}\n", data::chat_template_name(*prepared.chat_template));
  fmt::print("tokens: {} in {} sequences of {} ({}), padding {:.1f}%\n", t.tokens(), t.sequences(), seq_len,
             data::packing_name(prepared.packing), 100 * share(t.padding(), t.sequences() * seq_len));
  fmt::print("loss on {} targets; masked {:.1f}%\n", t.trained_tokens(),
             100 * stats["masked_fraction"].get<double>());
  fmt::print("truncated: {} examples, {} tokens ({:.1f}%)\n", t.truncated_examples(), t.truncated_tokens(),
             100 * share(t.truncated_tokens(), before_truncation));
  if (stats.contains("labels"))
    for (const auto& [label, count] : stats["labels"].items()) fmt::print("label {}: {}\n", label, count.get<std::int64_t>());
  if (preview > 0) {
    data::ExampleOptions options{.chat_template = prepared.chat_template,
                                 .train_on_prompt = data_args.train_on == "all"};
    const auto count = std::min<std::size_t>(static_cast<std::size_t>(preview), prepared.train_records.size());
    fmt::print("\nfirst {} examples; tokens without loss are inside [[ ]]:\n", count);
    for (std::size_t i = 0; i < count; ++i) {
      const auto e = data::tokenize_segments(
          data::record_segments(prepared.train_records[i], prepared.format, options), *tokenizer);
      fmt::print("--- example {} ({} tokens)\n{}\n", i + 1, e.ids.size(), marked_text(e, *tokenizer));
    }
  }
  return 0;
}

}  // namespace loracpp::cli
