// `lora eval`: loss and perplexity of a model (with adapters) on text; the last stdout line is JSON.
#include <fmt/core.h>


#include "backend/cpu/gemm_bf16.h"
#include "cli/adapters_arg.h"
#include "cli/commands.h"
#include "models/registry.h"
#include "ops/ops.h"
#include "train/trainer.h"

namespace loracpp::cli {

void EvalCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("eval", "Loss and perplexity on text, with or without adapters");
  app->add_option("--model,-m", model, "Base model")->required();
  app->add_option("--tokenizer", tokenizer, "Tokenizer file (default: found next to the model)");
  app->add_option("--adapter,-a", adapters, "PEFT adapter folder, DIR[:SCALE]; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--data,-d", data, "Data, in any format `lora train` reads")->required();
  app->add_option("--seq-len", seq_len, "Tokens per sequence")->check(CLI::PositiveNumber);
  app->add_option("--batch-size", batch_size, "Sequences per forward pass")->check(CLI::PositiveNumber);
  app->add_option("--validation-fraction", validation_fraction,
                  "Evaluate only the documents `lora train` holds out with this fraction and --seed")
      ->check(CLI::Range(0.0, 0.9));
  app->add_option("--seed", seed, "Seed of the held-out split");
  app->add_option("--base-dtype", base_dtype,
                  "Linear weights in f32, bf16 (bf16 products with f32 accumulation), or q8_0 or q4_0 (GGUF's 8- "
                  "and 4-bit blocks, multiplied in bf16 where the CPU has it, as lora train does). Default: as "
                  "the file stores them")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}));
  data_args.add_to(*app);
}

int EvalCommand::run() {
  auto loaded = models::load_model(model, {.tokenizer = tokenizer});
  check(loaded.tokenizer != nullptr, "eval", "no tokenizer found next to {}; give one with --tokenizer", model);
  load_adapter_args(*loaded.model, adapters);
  if (!base_dtype.empty()) loaded.model->store_weights(parse_dtype(base_dtype));
  // Over blocks, as `lora train` computes its validation loss: in bf16 where the CPU multiplies it
  // natively (ops.h).
  const ops::Bf16BlockProducts bf16_block_products(is_block_dtype(loaded.model->linear_weight_dtype()) &&
                                                   backend::cpu::bf16_products_native());
  auto prepared = prepare_data(data_args, data, "", validation_fraction, seed, *loaded.tokenizer, model, seq_len,
                               /*validation_only=*/validation_fraction > 0);
  check(validation_fraction == 0 || prepared.validation.has_value(), "eval",
        "--validation-fraction {} holds out no records of {}", validation_fraction, data);
  const auto& set = validation_fraction > 0 ? *prepared.validation : prepared.train;
  const auto examples = validation_fraction > 0 ? prepared.validation_records.size() : prepared.train_records.size();
  const auto result = train::evaluate(*loaded.model, set, batch_size);
  fmt::print("{}\n", nlohmann::json{{"loss", result.loss}, {"perplexity", result.perplexity},
                                    {"tokens", result.tokens}, {"documents", examples}}.dump());
  return 0;
}

}  // namespace loracpp::cli
