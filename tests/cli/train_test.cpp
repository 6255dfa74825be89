// `lora train`, `eval`, `merge`, `generate --adapter` and `inspect` on the real stories260K model,
// with small settings; bad inputs get one clear error and leave existing outputs alone.
#include <cstdlib>

#include "backend/cpu/gemm_bf16.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace loracpp {
namespace {

using Result = testing::CliRun;
Result lora(const std::string& args, bool with_stderr = true) { return testing::run_lora(args, with_stderr); }
using testing::last_line;

const std::string kModel = testing::shared_path("models/stories260K/stories260K.bin");

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string text;
    const char* stories[] = {"The cat sat on the warm mat and purred all day long.",
                             "A little bird sang a song in the tall green tree.",
                             "Tom and Lily played with a red ball in the big park.",
                             "The sun was hot, so the dog slept under the old tree.",
                             "Mom made a cake, and the kids ate it with a smile.",
                             "The boat went up and down on the blue sea all night."};
    for (int repeat = 0; repeat < 4; ++repeat)
      for (const char* s : stories) text += std::string(s) + "\n%\n";
    testing::write_text(dir_ / "data.txt", text);
  }
  std::string common(const std::string& out) const {
    return "train --model " + kModel + " --data " + (dir_ / "data.txt").string() + " --out " + out +
           " --seq-len 32 --batch-size 4 --micro-batch-size 2 --steps 6 --r 4 --alpha 8 --targets q_proj,v_proj "
           "--lr 0.005 --warmup 2 --seed 3 --validation-fraction 0.2 --dropout 0.1";
  }
  testing::TempDir dir_;
};

TEST_F(TrainCli, TrainsEvaluatesMergesAndGenerates) {
  const auto out = (dir_ / "run").string();
  const Result train = lora(common(out));
  ASSERT_EQ(train.status, 0) << train.output;
  const auto summary = nlohmann::json::parse(last_line(train.output));
  EXPECT_EQ(summary["steps"], 6);
  EXPECT_EQ(summary["trainable_parameters"], 5 * 2 * 4 * (64 + 64) - 5 * 4 * 64 + 5 * 4 * 32);  // q: 64->64, v: 64->32
  EXPECT_TRUE(std::filesystem::exists(dir_ / "run" / "adapter_model.safetensors"));
  const auto metrics = testing::read_text(dir_ / "run" / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 7);  // 6 steps + the final evaluation
  const auto config = nlohmann::json::parse(testing::read_text(dir_ / "run" / "adapter_config.json"));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["base_model_name_or_path"], kModel);

  const std::string data = (dir_ / "data.txt").string();
  const auto base = nlohmann::json::parse(last_line(lora("eval --model " + kModel + " --data " + data + " --seq-len 32", false).output));
  const auto tuned = nlohmann::json::parse(
      last_line(lora("eval --model " + kModel + " --adapter " + out + " --data " + data + " --seq-len 32", false).output));
  EXPECT_LT(tuned["perplexity"].get<double>(), base["perplexity"].get<double>());
  // On the bf16 path the perplexity moves by the rounding only.
  const auto tuned_bf16 = nlohmann::json::parse(last_line(
      lora("eval --model " + kModel + " --adapter " + out + " --data " + data + " --seq-len 32 --base-dtype bf16", false)
          .output));
  EXPECT_NEAR(tuned_bf16["perplexity"].get<double>(), tuned["perplexity"].get<double>(),
              0.01 * tuned["perplexity"].get<double>());
  EXPECT_NE(tuned_bf16["perplexity"].get<double>(), tuned["perplexity"].get<double>());
  // So it does over q8_0 weights, by the 8-bit blocks' rounding, the adapter applied unmerged.
  const auto tuned_q8 = nlohmann::json::parse(last_line(
      lora("eval --model " + kModel + " --adapter " + out + " --data " + data + " --seq-len 32 --base-dtype q8_0", false)
          .output));
  EXPECT_NEAR(tuned_q8["perplexity"].get<double>(), tuned["perplexity"].get<double>(),
              0.02 * tuned["perplexity"].get<double>());
  EXPECT_NE(tuned_q8["perplexity"].get<double>(), tuned["perplexity"].get<double>());
  // Scale 0 switches the adapter off.
  const auto off = nlohmann::json::parse(
      last_line(lora("eval --model " + kModel + " --adapter " + out + ":0 --data " + data + " --seq-len 32", false).output));
  EXPECT_DOUBLE_EQ(off["perplexity"].get<double>(), base["perplexity"].get<double>());

  const auto merged = (dir_ / "merged").string();
  const Result merge = lora("merge --model " + kModel + " --adapter " + out + " --out " + merged);
  ASSERT_EQ(merge.status, 0) << merge.output;
  EXPECT_LT(nlohmann::json::parse(last_line(merge.output))["relative_difference"].get<double>(), 1e-5);
  const auto via_merged = nlohmann::json::parse(last_line(lora("eval --model " + merged + " --data " + data + " --seq-len 32", false).output));
  EXPECT_NEAR(via_merged["loss"].get<double>(), tuned["loss"].get<double>(), 1e-5);

  const Result with_adapter = lora("generate --model " + kModel + " --adapter " + out + " --temperature 0 -n 40", false);
  const Result with_merged = lora("generate --model " + merged + " --temperature 0 -n 40", false);
  EXPECT_EQ(with_adapter.status, 0);
  EXPECT_EQ(with_adapter.output, with_merged.output);

  const Result inspect = lora("inspect " + out);
  EXPECT_EQ(inspect.status, 0);
  EXPECT_NE(inspect.output.find("r 4  alpha 8"), std::string::npos) << inspect.output;
  // The base files are untouched by all of this.
  EXPECT_EQ(testing::read_text(kModel).size(), std::filesystem::file_size(kModel));
}

TEST_F(TrainCli, ResumeContinuesBitForBit) {
  const auto straight = (dir_ / "straight").string(), split = (dir_ / "split").string();
  ASSERT_EQ(lora(common(straight)).status, 0);
  const Result first = lora(common(split) + " --save-every 3 --stop-at 3");
  ASSERT_EQ(first.status, 0) << first.output;
  ASSERT_TRUE(std::filesystem::exists(dir_ / "split" / "checkpoint-3" / "optimizer.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "split" / "adapter_model.safetensors"));
  const Result second = lora(common(split) + " --resume " + (dir_ / "split" / "checkpoint-3").string());
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_EQ(testing::read_text(dir_ / "split" / "adapter_model.safetensors"),
            testing::read_text(dir_ / "straight" / "adapter_model.safetensors"));
  // A checkpoint of another configuration is refused.
  const Result other = lora(common((dir_ / "other").string()) + " --lr 0.001 --resume " + (dir_ / "split" / "checkpoint-3").string());
  EXPECT_EQ(other.status, 1);
  EXPECT_NE(other.output.find("was made by a run of another configuration"), std::string::npos) << other.output;
}

// Recomputing each layer in the backward pass changes memory, not the adapter: bit for bit, with
// dropout on and two micro-batches a step; from a config file as well as the flag.
TEST_F(TrainCli, GradientCheckpointingTrainsTheSameAdapter) {
  const auto plain = (dir_ / "plain").string(), flag = (dir_ / "flag").string(), file = (dir_ / "file").string();
  ASSERT_EQ(lora(common(plain)).status, 0);
  const Result by_flag = lora(common(flag) + " --gradient-checkpointing");
  ASSERT_EQ(by_flag.status, 0) << by_flag.output;
  testing::write_text(dir_ / "ck.json", R"({"gradient_checkpointing": true})");
  const Result by_file = lora(common(file) + " -c " + (dir_ / "ck.json").string());
  ASSERT_EQ(by_file.status, 0) << by_file.output;
  for (const Result* r : {&by_flag, &by_file})
    EXPECT_NE(r->output.find("gradient checkpointing: each decoder layer"), std::string::npos) << r->output;
  const auto want = testing::read_text(dir_ / "plain" / "adapter_model.safetensors");
  EXPECT_EQ(testing::read_text(dir_ / "flag" / "adapter_model.safetensors"), want);
  EXPECT_EQ(testing::read_text(dir_ / "file" / "adapter_model.safetensors"), want);
}

TEST_F(TrainCli, JsonConfigWithFlagsWinning) {
  testing::write_text(dir_ / "run.json", R"({"steps": 2, "seq_len": 32, "batch_size": 2, "r": 2, "targets": "q_proj", "lr": 0.01})");
  const Result r = lora("train -c " + (dir_ / "run.json").string() + " --model " + kModel + " --data " +
                        (dir_ / "data.txt").string() + " --out " + (dir_ / "cfg").string() + " --steps 3");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(last_line(r.output))["steps"], 3);
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(dir_ / "cfg" / "adapter_config.json"))["r"], 2);
  testing::write_text(dir_ / "bad.json", R"({"stepz": 2})");
  const Result bad = lora("train -c " + (dir_ / "bad.json").string() + " --model " + kModel + " --data x --out y");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("unknown key 'stepz'"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("valid keys: "), std::string::npos) << bad.output;
}

TEST_F(TrainCli, BadInputsAreClearErrors) {
  // An empty dataset.
  testing::write_text(dir_ / "empty.txt", "%\n%\n");
  Result r = lora("train --model " + kModel + " --data " + (dir_ / "empty.txt").string() + " --out " + (dir_ / "e").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("[data] " + (dir_ / "empty.txt").string() + " holds no documents"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "e")) << "bad input left an output folder behind";
  // Sequences longer than the model's context (512).
  r = lora(common((dir_ / "long").string()) + " --seq-len 600");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("exceeds the model's context of 512"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "long"));
  // An output folder that cannot be created.
  r = lora(common((dir_ / "data.txt" / "sub").string()));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("[train] cannot create output folder"), std::string::npos) << r.output;
  // An existing result is not overwritten.
  ASSERT_EQ(lora(common((dir_ / "keep").string())).status, 0);
  const auto before = testing::read_text(dir_ / "keep" / "adapter_model.safetensors");
  r = lora(common((dir_ / "keep").string()) + " --r 2");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("already holds adapter_model.safetensors; pass --overwrite"), std::string::npos) << r.output;
  EXPECT_EQ(testing::read_text(dir_ / "keep" / "adapter_model.safetensors"), before);
  // A malformed adapter_config.json for eval.
  testing::write_text(dir_ / "keep" / "adapter_config.json", R"({"r": -1})");
  r = lora("eval --model " + kModel + " --adapter " + (dir_ / "keep").string() + " --data " + (dir_ / "data.txt").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("[lora] field 'r' must be a positive integer, got -1"), std::string::npos) << r.output;
  // An unknown flag.
  r = lora("train --rank-size 3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--rank-size"), std::string::npos) << r.output;
}

// With a GPU, --device cuda trains there and saves the adapter; without one, it is one clear error
// before anything is written.
TEST_F(TrainCli, OnCudaTrainsOrSaysWhyNot) {
  const auto out = dir_ / "gpu";
  const Result r = lora(common(out.string()) + " --device cuda");
  if (testing::cuda_available()) {
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(std::filesystem::exists(out / "adapter_model.safetensors"));
    const auto summary = nlohmann::json::parse(last_line(r.output));
    EXPECT_TRUE(std::isfinite(summary["train_loss"].get<double>()));
  } else {
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("[train] --device cuda: " + testing::cuda_unavailable_reason()), std::string::npos)
        << r.output;
    EXPECT_FALSE(std::filesystem::exists(out / "adapter_model.safetensors"));
  }
}

// A bf16 base trains; where the CPU multiplies bf16 only by widening it to f32, a note says that
// the choice saves memory, not time.
TEST_F(TrainCli, Bf16BaseTrainsAndSaysWhereItSavesOnlyMemory) {
  const auto out = dir_ / "bf16";
  const Result r = lora(common(out.string()) + " --base-dtype bf16");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out / "adapter_model.safetensors"));
  const auto summary = nlohmann::json::parse(last_line(r.output));
  EXPECT_TRUE(std::isfinite(summary["train_loss"].get<double>()));
  const bool noted = r.output.find("note: this CPU has no native bf16 products") != std::string::npos;
  EXPECT_EQ(noted, !backend::cpu::bf16_products_native()) << r.output;
}

// LORACPP_F32_GEMM names the library for f32 products; any other value is refused with one message
// before training starts, and the command exits 1.
TEST_F(TrainCli, AnUnknownF32LibraryIsRefused) {
  ASSERT_EQ(::setenv("LORACPP_F32_GEMM", "mkl", 1), 0);
  const Result r = lora(common((dir_ / "refused").string()));
  ::unsetenv("LORACPP_F32_GEMM");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("error: [gemm] LORACPP_F32_GEMM must be openblas or onednn, not 'mkl'"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "refused" / "adapter_model.safetensors"));
}

// An adapter trains over weights in blocks (products in f32) as over the f32 weights they stand
// for: the loss falls as it does on f32, within what the blocks' rounding moves it (q8_0 within
// 2%; q4_0's 4-bit layers, measured 2% above f32, within 5%), in bf16 where the CPU multiplies it
// natively, as lora eval then computes too; the GPU refuses the dtypes before anything is written.
TEST_F(TrainCli, BlockBasesTrain) {
  const Result f32 = lora(common((dir_ / "f32").string()));
  ASSERT_EQ(f32.status, 0) << f32.output;
  const double f32_loss = nlohmann::json::parse(last_line(f32.output))["train_loss"].get<double>();
  for (const auto& [dtype, tolerance] : {std::pair<std::string, double>{"q8_0", 0.02}, {"q4_0", 0.05}}) {
    SCOPED_TRACE(dtype);
    const Result r = lora(common((dir_ / dtype).string()) + " --base-dtype " + dtype);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(std::filesystem::exists(dir_ / dtype / "adapter_model.safetensors"));
    const auto summary = nlohmann::json::parse(last_line(r.output));
    const double loss = summary["train_loss"].get<double>();
    EXPECT_NE(loss, f32_loss);
    EXPECT_NEAR(loss, f32_loss, tolerance * f32_loss);
    // lora eval over the same blocks computes as training did: its loss on the held-out split is
    // the final evaluation's, given the same sequences per pass (training evaluates a micro-batch
    // at a time; bf16 products sum in an order that depends on a pass's rows, which moved the loss
    // by 1e-5 of itself on a CPU with native bf16).
    const Result eval = lora("eval --model " + kModel + " --adapter " + (dir_ / dtype).string() + " --data " +
                                 (dir_ / "data.txt").string() + " --seq-len 32 --validation-fraction 0.2 --seed 3 "
                                 "--batch-size 2 --base-dtype " + dtype,
                             false);
    ASSERT_EQ(eval.status, 0) << eval.output;
    EXPECT_NEAR(nlohmann::json::parse(last_line(eval.output))["loss"].get<double>(), summary["eval_loss"].get<double>(),
                1e-6);
    const Result gpu = lora(common((dir_ / (dtype + "gpu")).string()) + " --base-dtype " + dtype + " --device cuda");
    EXPECT_EQ(gpu.status, 1);
    EXPECT_NE(gpu.output.find("[train] --base-dtype " + dtype + " runs on the CPU only"), std::string::npos)
        << gpu.output;
    EXPECT_FALSE(std::filesystem::exists(dir_ / (dtype + "gpu")));
  }
}

// Merging into a Q8_0 or Q4_0 GGUF base widens it first: the merged model's probe logits then
// differ from base + adapter by f32 rounding only (summed into blocks, they would move by the
// blocks' step). Written back with --dtype q8_0 or q4_0, the merged file holds blocks again (q4_0's
// smaller). Full fine-tuning of such a base trains widened f32 weights.
TEST_F(TrainCli, BlockGgufBaseIsWidenedToMergeOrFullyTrain) {
  const auto out = (dir_ / "adapter").string();
  ASSERT_EQ(lora(common(out)).status, 0);
  const std::string base = (dir_ / "base.gguf").string(), merged = (dir_ / "merged.gguf").string();
  ASSERT_EQ(lora("convert " + kModel + " --to " + base + " --format gguf --dtype q8_0").status, 0);
  const Result r = lora("merge --model " + base + " --adapter " + out + " --out " + merged, false);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto summary = nlohmann::json::parse(last_line(r.output));
  EXPECT_LT(summary["relative_difference"].get<double>(), 1e-5) << r.output;
  const Result q8 = lora("merge --model " + base + " --adapter " + out + " --out " + (dir_ / "merged8.gguf").string() +
                         " --dtype q8_0", false);
  ASSERT_EQ(q8.status, 0) << q8.output;
  EXPECT_LT(std::filesystem::file_size(dir_ / "merged8.gguf"), std::filesystem::file_size(merged));
  const std::string base4 = (dir_ / "base4.gguf").string();
  ASSERT_EQ(lora("convert " + kModel + " --to " + base4 + " --format gguf --dtype q4_0").status, 0);
  const Result r4 = lora("merge --model " + base4 + " --adapter " + out + " --out " + (dir_ / "merged4.gguf").string() +
                         " --dtype q4_0", false);
  ASSERT_EQ(r4.status, 0) << r4.output;
  EXPECT_LT(nlohmann::json::parse(last_line(r4.output))["relative_difference"].get<double>(), 1e-5) << r4.output;
  EXPECT_LT(std::filesystem::file_size(dir_ / "merged4.gguf"), std::filesystem::file_size(dir_ / "merged8.gguf"));
  // Full fine-tuning trains f32 weights widened from the blocks.
  const Result full = lora("train --model " + base + " --data " + (dir_ / "data.txt").string() + " --out " +
                           (dir_ / "full").string() + " --full --steps 2 --seq-len 16 --batch-size 2");
  ASSERT_EQ(full.status, 0) << full.output;
  EXPECT_TRUE(std::isfinite(nlohmann::json::parse(last_line(full.output))["train_loss"].get<double>()));
}

}  // namespace
}  // namespace loracpp
