// The `lora` executable: flags, errors and the demo, run as a user runs them.
#include <string>

#include "test_util.h"

namespace loracpp {
namespace {

using testing::CliRun;
CliRun run_cli(const std::string& args) { return testing::run_lora(args); }

TEST(Cli, HelpListsTheCommandsAndOptions) {
  const CliRun r = run_cli("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("--threads"), std::string::npos);
  EXPECT_NE(r.output.find("demo"), std::string::npos);
}

TEST(Cli, UnknownFlagIsRefusedWithNonZeroExit) {
  const CliRun r = run_cli("demo --stepz 3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--stepz"), std::string::npos) << r.output;
}

TEST(Cli, InvalidThreadCountIsRefused) {
  const CliRun r = run_cli("--threads 0 demo");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--threads"), std::string::npos) << r.output;
}

TEST(Cli, DemoTrainsTheAdapterDownToASmallLoss) {
  const CliRun r = run_cli("--threads 1 demo --steps 150 --rank 4");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto at = r.output.find("final loss ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const double final_loss = std::stod(r.output.substr(at + 11));
  const auto first = r.output.find("loss ");
  const double first_loss = std::stod(r.output.substr(first + 5));
  EXPECT_LT(final_loss, 0.1 * first_loss) << r.output;
}

}  // namespace
}  // namespace loracpp

namespace loracpp {
namespace {

const std::string kStories = testing::shared_path("models/stories260K/stories260K.bin");

TEST(CliModels, GenerateGreedyPrintsOnlyTheStoryOnStdout) {
  testing::TempDir dir;
  const auto out = dir / "story.txt";
  const CliRun r = run_cli("generate --model " + kStories + " --temperature 0 -n 256 > " + out.string() + " 2>/dev/null; test $? -eq 0");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(testing::read_text(out), testing::read_text(testing::shared_path("models/stories260K/greedy_256.txt")));
}

// The bf16 path from the command line: the same story's opening (its weights, activations and KV
// cache rounded to bf16 move stories260K's logits by well under their gaps there), and the prompt's
// and the generation's rates reported apart on stderr.
TEST(CliModels, GenerateOnTheBf16Path) {
  const std::string args = " --prompt \"Once upon a time, Lily\" --temperature 0 -n 24";
  const CliRun f32 = run_cli("generate --model " + kStories + args);
  const CliRun bf16 = run_cli("generate --model " + kStories + args + " --base-dtype bf16");
  ASSERT_EQ(f32.status, 0) << f32.output;
  ASSERT_EQ(bf16.status, 0) << bf16.output;
  const std::string story = bf16.output.substr(0, bf16.output.find('\n'));  // stdout's line; stderr follows
  EXPECT_EQ(story.rfind("Once upon a time, Lily", 0), 0u) << bf16.output;
  EXPECT_EQ(story, f32.output.substr(0, f32.output.find('\n')));
  EXPECT_NE(bf16.output.find("\nprompt: 7 tokens in"), std::string::npos) << bf16.output;
  EXPECT_NE(bf16.output.find("\ngenerated: 18 tokens in"), std::string::npos) << bf16.output;
  EXPECT_NE(run_cli("generate --model " + kStories + " --base-dtype f16").status, 0);
}

// q8_0 weights from the command line: the same story's opening (8-bit blocks and the bf16 KV cache
// move stories260K's logits by about 0.6% of their spread, so greedy choices can part later, at a
// near tie), the rates reported, a dtype outside the list refused, and a GGUF file converted to
// q8_0 (read back as f32) opening the same way.
TEST(CliModels, GenerateOnQ8_0Weights) {
  const std::string args = " --prompt \"Once upon a time, Lily\" --temperature 0 -n 24";
  const CliRun f32 = run_cli("generate --model " + kStories + args);
  const CliRun q8 = run_cli("generate --model " + kStories + args + " --base-dtype q8_0");
  ASSERT_EQ(f32.status, 0) << f32.output;
  ASSERT_EQ(q8.status, 0) << q8.output;
  EXPECT_EQ(q8.output.substr(0, q8.output.find('\n')), f32.output.substr(0, f32.output.find('\n')));
  EXPECT_NE(q8.output.find("\ngenerated: 18 tokens in"), std::string::npos) << q8.output;
  // Written to a GGUF file in q8_0, the same blocks tell the same story.
  testing::TempDir dir;
  const std::string gguf = (dir / "q8.gguf").string();
  ASSERT_EQ(run_cli("convert " + kStories + " --to " + gguf + " --format gguf --dtype q8_0").status, 0);
  const CliRun from_file = run_cli("generate --model " + gguf + args);
  ASSERT_EQ(from_file.status, 0) << from_file.output;
  EXPECT_EQ(from_file.output.substr(0, from_file.output.find('\n')), q8.output.substr(0, q8.output.find('\n')));
  const CliRun wrong = run_cli("generate --model " + kStories + " --base-dtype q4_1");
  EXPECT_NE(wrong.status, 0);
  EXPECT_NE(wrong.output.find("--base-dtype: q4_1 not in {f32,bf16,q8_0,q4_0}"), std::string::npos) << wrong.output;
}

// q4_0 weights from the command line: the layers' 4-bit blocks (and the output layer's 8-bit ones)
// move stories260K's logits by about 7% of their spread, so the text parts from f32's; but a GGUF
// file converted to q4_0 holds the same blocks, read in place, and tells the same story as
// --base-dtype q4_0 on the f32 model, with the rates reported.
TEST(CliModels, GenerateOnQ4_0Weights) {
  const std::string args = " --prompt \"Once upon a time, Lily\" --temperature 0 -n 24";
  const CliRun q4 = run_cli("generate --model " + kStories + args + " --base-dtype q4_0");
  ASSERT_EQ(q4.status, 0) << q4.output;
  EXPECT_NE(q4.output.find("\ngenerated: 18 tokens in"), std::string::npos) << q4.output;
  testing::TempDir dir;
  const std::string gguf = (dir / "q4.gguf").string();
  ASSERT_EQ(run_cli("convert " + kStories + " --to " + gguf + " --format gguf --dtype q4_0").status, 0);
  const CliRun from_file = run_cli("generate --model " + gguf + args);
  ASSERT_EQ(from_file.status, 0) << from_file.output;
  EXPECT_EQ(from_file.output.substr(0, from_file.output.find("\nprompt:")), q4.output.substr(0, q4.output.find("\nprompt:")));
  const CliRun hf = run_cli("convert " + kStories + " --to " + (dir / "hf").string() + " --format hf --dtype q4_0");
  EXPECT_NE(hf.status, 0);
  EXPECT_NE(hf.output.find("q4_0 is written to GGUF files only"), std::string::npos) << hf.output;
}

TEST(CliModels, InspectDescribesTheModel) {
  const CliRun r = run_cli("inspect " + kStories);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("LlamaForCausalLM"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"), std::string::npos);
  EXPECT_NE(r.output.find("layers 5  hidden 64"), std::string::npos) << r.output;
}

TEST(CliModels, ConvertRoundTripsThroughGguf) {
  testing::TempDir dir;
  const auto gguf = (dir / "s.gguf").string();
  ASSERT_EQ(run_cli("convert " + kStories + " --to " + gguf + " --format gguf --dtype f16").status, 0);
  const CliRun r = run_cli("generate --model " + gguf + " --temperature 0 -n 30 2>/dev/null");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("Once upon a time", 0), 0u) << r.output;
}

TEST(CliModels, MissingModelIsOneClearError) {
  const CliRun r = run_cli("generate --model /nonexistent/model.bin");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.output, "error: [model] /nonexistent/model.bin does not exist\n");
}

}  // namespace
}  // namespace loracpp

namespace loracpp {
namespace {

TEST(CliTokenize, EncodesAndDecodes) {
  const std::string model = testing::shared_path("models/stories260K/stories260K.bin");
  CliRun r = run_cli("tokenize -m " + model + " -t 'Once upon a time' 2>/dev/null");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "[403,407,261,378]\n");
  r = run_cli("tokenize -m " + model + " --decode -t '[403,407,261,378]' 2>/dev/null");
  EXPECT_EQ(r.output, "Once upon a time\n");
  r = run_cli("tokenize -m " + model + " --decode -t 'not json'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("[tokenize] --decode expects a JSON array of token ids"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace loracpp
