// `lora eval`: loss and perplexity of a model (with adapters) on text; the last stdout line is JSON.
#include <fmt/core.h>

#include "cli/adapters_arg.h"
#include "cli/commands.h"
#include "data/text_dataset.h"
#include "models/registry.h"
#include "train/trainer.h"

namespace loracpp::cli {

void EvalCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("eval", "Loss and perplexity on text, with or without adapters");
  app->add_option("--model,-m", model, "Base model")->required();
  app->add_option("--tokenizer", tokenizer, "Tokenizer file (default: found next to the model)");
  app->add_option("--adapter,-a", adapters, "PEFT adapter folder, DIR[:SCALE]; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--data,-d", data, "Text: .txt or .jsonl")->required();
  app->add_option("--seq-len", seq_len, "Tokens per sequence")->check(CLI::PositiveNumber);
  app->add_option("--batch-size", batch_size, "Sequences per forward pass")->check(CLI::PositiveNumber);
  app->add_option("--validation-fraction", validation_fraction,
                  "Evaluate only the documents `lora train` holds out with this fraction and --seed")
      ->check(CLI::Range(0.0, 0.9));
  app->add_option("--seed", seed, "Seed of the held-out split");
}

int EvalCommand::run() {
  auto loaded = models::load_model(model, {.tokenizer = tokenizer});
  check(loaded.tokenizer != nullptr, "eval", "no tokenizer found next to {}; give one with --tokenizer", model);
  load_adapter_args(*loaded.model, adapters);
  auto documents = data::read_documents(data);
  if (validation_fraction > 0) documents = data::split_documents(std::move(documents), validation_fraction, seed).second;
  const data::TokenDataset set(documents, *loaded.tokenizer, seq_len, data);
  const auto result = train::evaluate(*loaded.model, set, batch_size);
  fmt::print("{}\n", nlohmann::json{{"loss", result.loss}, {"perplexity", result.perplexity},
                                    {"tokens", result.tokens}, {"documents", documents.size()}}.dump());
  return 0;
}

}  // namespace loracpp::cli
