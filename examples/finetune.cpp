// Fine-tuning inside your own program, with the public API only (include/loracpp/finetuner.h):
// load a model, attach a LoRA adapter, train it on a few documents, evaluate, save it in PEFT's
// format, merge it, and generate.
//   finetune MODEL OUT_DIR
#include <cstdio>
#include <string>
#include <vector>

#include "loracpp/finetuner.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    auto tuner = loracpp::FineTuner::load(argv[1]);
    const std::vector<std::string> documents = {
        "The robot liked to count stars. Every night it counted one more star than the night before.",
        "The robot had a small red hat. The hat kept the rain off its head when it counted stars.",
        "One night the robot counted so many stars that the sun came up. The robot was very happy.",
        "The robot told the little girl about the stars. She wanted to count the stars too.",
    };
    loracpp::lora::LoraConfig config;
    config.r = 4;
    config.lora_alpha = 8;
    config.target_modules = {"q_proj", "v_proj"};
    tuner.add_adapter("robot", config, /*seed=*/1);
    const auto before = tuner.evaluate(documents, 32);
    loracpp::train::TrainOptions options;
    options.steps = 20;
    options.batch_size = 4;
    options.lr = 5e-3f;
    tuner.train("robot", documents, {}, 32, options, [](const loracpp::train::TrainEvent& event) {
      if (event.kind == loracpp::train::TrainEvent::Kind::step && event.step % 5 == 0)
        std::printf("step %lld loss %.4f\n", static_cast<long long>(event.step), event.loss);
    });
    const auto after = tuner.evaluate(documents, 32);
    std::printf("trainable parameters: %lld\n", static_cast<long long>(tuner.trainable_parameters("robot")));
    std::printf("perplexity before %.2f after %.2f\n", before.perplexity, after.perplexity);
    const std::string out = argv[2];
    tuner.save_adapter("robot", out + "/adapter");
    tuner.merge("robot");
    tuner.save_model(out + "/merged");
    std::printf("generation: %s\n", tuner.generate("The robot", 30, {.temperature = 0.0f}).c_str());
    return after.perplexity < before.perplexity ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
