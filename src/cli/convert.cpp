// `lora convert`: a model into another format.
#include "cli/commands.h"
#include "models/convert.h"
#include "models/registry.h"

namespace loracpp::cli {

void ConvertCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("convert", "Convert a model to a HuggingFace folder or a GGUF file");
  app->add_option("model", model, "Model: HuggingFace folder, .gguf file or llama2.c .bin")->required();
  app->add_option("--to", out, "Output folder (hf) or file (gguf)")->required();
  app->add_option("--format", format, "Output format")->required()->check(CLI::IsMember({"hf", "gguf"}));
  app->add_option("--dtype", dtype, "Weight dtype of the output (q8_0, q4_0: GGUF's 8- and 4-bit blocks, gguf only)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0"}));
}

int ConvertCommand::run() {
  const auto loaded = models::load_model(model);
  models::save_model(*loaded.model, loaded.tokenizer.get(), out, format, parse_dtype(dtype));
  fmt::print(stderr, "wrote {} ({})\n", out, format);
  return 0;
}

}  // namespace loracpp::cli
