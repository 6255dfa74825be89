#pragma once
// A small LoRA run on the real stories260K model, shared by the tests that compare training paths
// (bf16 base against f32, GPU against CPU): r=4 on every linear layer, four short stories repeated,
// batch 4 of 32 tokens, a fixed seed. Returns the loss of each step.
#include <string>
#include <vector>

#include "loracpp/finetuner.h"
#include "test_util.h"

namespace loracpp::testing {

inline std::vector<double> stories_lora_losses(DType base, Device device, std::int64_t steps,
                                               bool gradient_checkpointing = false) {
  auto tuner = FineTuner::load(shared_path("models/stories260K/stories260K.bin"));
  tuner.model().store_weights(base);
  lora::LoraConfig config;
  config.r = 4;
  config.lora_alpha = 8;
  config.all_linear = true;
  config.target_modules.clear();
  tuner.add_adapter("default", config, 5);
  tuner.model().to(device);  // after the adapter: it moves with the weights
  std::vector<std::string> documents;
  for (int repeat = 0; repeat < 8; ++repeat)
    for (const char* s : {"Tom had a red ball. He liked to play with it in the park.",
                          "Lily saw a big dog. The dog was happy and wagged its tail.",
                          "The sun was hot. Sam and Mia went to the sea to swim.",
                          "A little cat sat on the mat and looked at the bird."})
      documents.emplace_back(s);
  train::TrainOptions options;
  options.steps = steps;
  options.batch_size = 4;
  options.lr = 5e-3f;
  options.seed = 3;
  options.gradient_checkpointing = gradient_checkpointing;
  std::vector<double> losses;
  tuner.train("default", documents, {}, 32, options, [&](const train::TrainEvent& e) {
    if (e.kind == train::TrainEvent::Kind::step) losses.push_back(e.loss);
  });
  return losses;
}

}  // namespace loracpp::testing
