// The Llama model on the GPU gives what it gives on the CPU: the same logits, llama2.c's greedy
// story byte for byte, and the same LoRA loss curve (f32 and bf16 base). Where no GPU is present
// (CI) these tests report themselves skipped, with the reason; they never count as passing there.
#include "loracpp/finetuner.h"
#include "models/generate.h"
#include "models/registry.h"
#include "ops/tape.h"
#include "test_util.h"
#include "train/stories_lora_run.h"

namespace loracpp {
namespace {

const std::string kModel = testing::shared_path("models/stories260K/stories260K.bin");

class LlamaOnCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::cuda_available()) GTEST_SKIP() << "not run: " << testing::cuda_unavailable_reason();
  }
};

TEST_F(LlamaOnCuda, LogitsMatchTheCpu) {
  const auto loaded = models::load_model(kModel);
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{1, 403, 407, 261, 378, 300, 50, 7, 9, 411}, {2, 5});
  const auto cpu = loaded.model->forward(ids).to_floats();
  loaded.model->to(Device::cuda);
  EXPECT_EQ(loaded.model->device(), Device::cuda);
  const Tensor logits = loaded.model->forward(ids);  // ids on the host are copied to the model's device
  EXPECT_EQ(logits.device(), Device::cuda);
  EXPECT_TRUE(testing::all_close(logits.to_floats(), cpu, 1e-4f, 1e-4f));
}

TEST_F(LlamaOnCuda, GreedyStoryMatchesLlama2cByteForByte) {
  const auto loaded = models::load_model(kModel);
  loaded.model->to(Device::cuda);
  std::string text;
  models::generate(*loaded.model, *loaded.tokenizer, "", {256, {.temperature = 0.0f}},
                   [&](const std::string& piece) { text += piece; });
  EXPECT_EQ(text + "\n", testing::read_text(testing::shared_path("models/stories260K/greedy_256.txt")));
}

TEST_F(LlamaOnCuda, LoraLossCurveMatchesTheCpuInF32) {
  const auto cpu = testing::stories_lora_losses(DType::f32, Device::cpu, 10),
             gpu = testing::stories_lora_losses(DType::f32, Device::cuda, 10);
  ASSERT_EQ(cpu.size(), 10u);
  ASSERT_EQ(gpu.size(), 10u);
  for (std::size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(gpu[i], cpu[i], 1e-4 * cpu[i]) << "step " << i + 1;
  EXPECT_LT(gpu.back(), gpu.front());
}

TEST_F(LlamaOnCuda, LoraLossCurveOverABf16BaseMatchesTheCpuWithinBf16Tolerance) {
  const auto cpu = testing::stories_lora_losses(DType::bf16, Device::cpu, 10),
             gpu = testing::stories_lora_losses(DType::bf16, Device::cuda, 10);
  ASSERT_EQ(cpu.size(), 10u);
  ASSERT_EQ(gpu.size(), 10u);
  for (std::size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(gpu[i], cpu[i], 0.01 * cpu[i] + 0.005) << "step " << i + 1;
  EXPECT_LT(gpu.back(), gpu.front());
}

}  // namespace
}  // namespace loracpp
