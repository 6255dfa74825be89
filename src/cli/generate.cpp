// `lora generate`: text from a model; only the generated text goes to stdout, logs to stderr.
#include <cstdio>
#include <fmt/core.h>

#include "backend/cpu/gemm_bf16.h"
#include "cli/adapters_arg.h"
#include "cli/commands.h"
#include "models/generate.h"
#include "models/registry.h"
#include "ops/ops.h"

namespace loracpp::cli {

void GenerateCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("generate", "Generate text with a model");
  app->add_option("--model,-m", model, "Model: HuggingFace folder, .gguf file or llama2.c .bin")->required();
  app->add_option("--tokenizer", tokenizer, "Tokenizer file (default: found next to the model)");
  app->add_option("--prompt,-p", prompt, "Text to continue");
  app->add_option("--adapter,-a", adapters, "PEFT adapter folder, DIR[:SCALE]; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("-n,--steps", steps, "Positions in all, BOS and prompt included (as llama2.c's run.c)")
      ->check(CLI::PositiveNumber);
  app->add_option("--temperature,-t", temperature, "0 for greedy")->check(CLI::NonNegativeNumber);
  app->add_option("--top-k", top_k, "Sample among the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber);
  app->add_option("--top-p", top_p, "Nucleus sampling threshold")->check(CLI::Range(0.0f, 1.0f));
  app->add_option("--seed", seed, "Random seed");
  app->add_option("--base-dtype", base_dtype,
                  "Linear weights in f32; bf16 (bf16 products with f32 accumulation, and a bf16 KV cache); or "
                  "q8_0 or q4_0 (GGUF's 8- and 4-bit blocks, read in place by each generated token: about a half "
                  "and a quarter of bf16's bytes; the output layer stays q8_0 under q4_0; a bf16 KV cache). "
                  "Default: as the file stores them (a Q8_0 or Q4_0 GGUF file's blocks in place)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}));
}

int GenerateCommand::run() {
  auto loaded = models::load_model(model, {.tokenizer = tokenizer});
  check(loaded.tokenizer != nullptr, "generate", "no tokenizer found next to {}; give one with --tokenizer", model);
  load_adapter_args(*loaded.model, adapters);
  if (!base_dtype.empty()) loaded.model->store_weights(parse_dtype(base_dtype));
  // Over blocks the prompt's pass multiplies in bf16 where the CPU has it natively, as training
  // does, and each generated token's activations are quantised to 8 bits for integer products
  // against the blocks where the CPU has those, as llama.cpp does (ops.h).
  const bool blocks = is_block_dtype(loaded.model->linear_weight_dtype());
  const ops::Bf16BlockProducts bf16_block_products(blocks && backend::cpu::bf16_products_native());
  const ops::Q8BlockRows q8_block_rows(blocks);
  const models::GenerateOptions options{steps, {temperature, top_k, top_p, seed}};
  const auto result = models::generate(*loaded.model, *loaded.tokenizer, prompt, options, [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (result.prompt_seconds > 0)
    fmt::print(stderr, "prompt: {} tokens in {:.3f} s ({:.1f} tok/s)\n", result.prompt_tokens, result.prompt_seconds,
               static_cast<double>(result.prompt_tokens) / result.prompt_seconds);
  if (result.seconds > 0 && result.generated > 0)
    fmt::print(stderr, "generated: {} tokens in {:.3f} s ({:.1f} tok/s)\n", result.generated, result.seconds,
               static_cast<double>(result.generated) / result.seconds);
  return 0;
}

}  // namespace loracpp::cli
