// `lora data` reports what a file becomes, and `lora train` accepts every data format.
#include "test_util.h"

namespace loracpp {
namespace {

const std::string kModel = testing::shared_path("models/stories260K/stories260K.bin");

class DataCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string chat, pc, alpaca, labelled, csv = "prompt,completion\n";
    const char* names[] = {"Lily", "Tom", "Sam", "Ben", "Mia", "Max", "Amy", "Tim"};
    for (int i = 0; i < 16; ++i) {
      const std::string name = names[i % 8];
      chat += R"({"messages": [{"role": "user", "content": "Who is )" + name + R"(?"}, {"role": "assistant", "content": ")" +
              name + R"( is a kid who likes to play."}]})" "\n";
      pc += R"({"prompt": "Once upon a time, )" + name + R"(", "completion": " went to the park."})" "\n";
      alpaca += R"({"instruction": "Write about )" + name + R"(.", "input": "", "output": ")" + name + R"( was happy."})" "\n";
      labelled += R"({"text": ")" + name + R"( smiled.", "label": ")" + (i % 2 ? "happy" : "sad") + R"("})" "\n";
      csv += "\"Hello, " + name + "\",\" said the cat.\"\n";
    }
    testing::write_text(dir_ / "chat.jsonl", chat);
    testing::write_text(dir_ / "pc.jsonl", pc);
    testing::write_text(dir_ / "alpaca.jsonl", alpaca);
    testing::write_text(dir_ / "labelled.jsonl", labelled);
    testing::write_text(dir_ / "pc.csv", csv);
    std::string stories;
    for (int i = 0; i < 40; ++i) stories += "The cat sat on the mat.\n%\nThe dog ran in the sun.\n%\n";
    testing::write_text(dir_ / "stories.txt", stories);
  }
  testing::TempDir dir_;
};

TEST_F(DataCli, ReportsCountsMasksAndAPreview) {
  const auto r = testing::run_lora("data " + (dir_ / "chat.jsonl").string() + " -m " + kModel +
                                   " --chat-template chatml --seq-len 64 --preview 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("16 examples (chat messages)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("chat template: chatml"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[[<|im_start|>user\nWho is Lily?<|im_end|>\n<|im_start|>assistant\n]]Lily is a kid who "
                          "likes to play.<|im_end|>"),
            std::string::npos)
      << r.output;
  const auto j = testing::run_lora("data " + (dir_ / "labelled.jsonl").string() + " -m " + kModel + " --json", false);
  ASSERT_EQ(j.status, 0) << j.output;
  const auto stats = nlohmann::json::parse(j.output);
  EXPECT_EQ(stats["examples"], 16);
  EXPECT_EQ(stats["labels"]["happy"], 8);
  EXPECT_EQ(stats["labels"]["sad"], 8);
  EXPECT_GT(stats["masked_fraction"].get<double>(), 0.3);
  EXPECT_EQ(stats["truncated_examples"], 0);
  const auto cut = testing::run_lora("data " + (dir_ / "pc.jsonl").string() + " -m " + kModel + " --seq-len 10 --json", false);
  ASSERT_EQ(cut.status, 0) << cut.output;
  EXPECT_EQ(nlohmann::json::parse(cut.output)["truncated_examples"], 16);
}

TEST_F(DataCli, ChatDataWithoutATemplateIsRefusedListingTheKnownOnes) {
  const auto r = testing::run_lora("data " + (dir_ / "chat.jsonl").string() + " -m " + kModel);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("known: chatml, llama3, llama2, mistral, alpaca"), std::string::npos) << r.output;
  const auto bad = testing::run_lora("data " + (dir_ / "chat.jsonl").string() + " -m " + kModel + " --chat-template x");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("unknown chat template 'x'"), std::string::npos) << bad.output;
}

TEST_F(DataCli, TrainAcceptsEveryFormat) {
  for (const std::string file : {"chat.jsonl", "pc.jsonl", "alpaca.jsonl", "labelled.jsonl", "pc.csv", "stories.txt"}) {
    const auto out = (dir_ / ("run_" + file)).string();
    const auto r = testing::run_lora("train -m " + kModel + " -d " + (dir_ / file).string() + " -o " + out +
                                     " --chat-template llama2 --seq-len 192 --steps 2 --batch-size 2 --r 2 "
                                     "--validation-fraction 0.25");
    ASSERT_EQ(r.status, 0) << file << "\n" << r.output;
    const auto summary = nlohmann::json::parse(testing::last_line(r.output));
    EXPECT_TRUE(std::isfinite(summary["eval_loss"].get<double>())) << file;
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(out) / "adapter_model.safetensors")) << file;
  }
}

TEST_F(DataCli, EvalReadsStructuredDataToo) {
  const auto r = testing::run_lora("eval -m " + kModel + " -d " + (dir_ / "pc.jsonl").string() + " --seq-len 32", false);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto result = nlohmann::json::parse(testing::last_line(r.output));
  EXPECT_GT(result["tokens"].get<std::int64_t>(), 0);
  EXPECT_EQ(result["documents"], 16);
}

}  // namespace
}  // namespace loracpp
