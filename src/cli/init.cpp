// `lora init`: a new model with random weights from a HuggingFace-style config, to pretrain with
// `lora train --full`.
#include <fmt/core.h>

#include <fstream>

#include "cli/commands.h"
#include "io/json_file.h"
#include "core/random.h"
#include "models/convert.h"
#include "tokenizers/llama2c_tokenizer.h"

namespace loracpp::cli {

void InitCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("init", "Create a randomly initialised model from a config.json");
  app->add_option("--config", config, "HuggingFace-style config.json (Llama family)")->required();
  app->add_option("--out,-o", out, "Output folder")->required();
  app->add_option("--tokenizer", tokenizer, "'bytes' (259 byte-level tokens) or a llama2.c tokenizer.bin");
  app->add_option("--seed", seed, "Seed of the initialisation");
}

int InitCommand::run() {
  auto c = models::LlamaConfig::from_hf_json(io::read_json_file(config, "init"), config);
  const auto tok = tokenizer == "bytes" ? tokenizers::Llama2cTokenizer::bytes()
                                        : tokenizers::Llama2cTokenizer::load(tokenizer, c.vocab_size);
  check(tok.vocab_size() == c.vocab_size, "init", "vocab_size {} in {} differs from the tokenizer's {} tokens",
        c.vocab_size, config, tok.vocab_size());
  // GPT-2 style: N(0, 0.02) for matrices, ones for norms, zeros for biases.
  Rng rng(seed);
  std::map<std::string, Tensor> weights;
  for (const auto& [name, shape] : models::llama_tensor_shapes(c)) {
    if (name.ends_with("norm.weight")) {
      weights[name] = Tensor::full(shape, 1.0f);
    } else if (name.ends_with(".bias")) {
      weights[name] = Tensor::zeros(shape);
    } else {
      weights[name] = randn(shape, rng, DType::f32, 0.02f);
    }
  }
  const models::LlamaModel model(c, std::move(weights), "init");
  models::save_model(model, &tok, out, "hf", DType::f32);
  fmt::print(stderr, "wrote a random {}-layer model to {}\n", c.num_layers, out);
  return 0;
}

}  // namespace loracpp::cli
