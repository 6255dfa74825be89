// stories260K's tokenizer: llama2.c's tok512.bin, read by our SentencePiece-style BPE, must give
// the ids of Debian's SentencePiece (spm_encode) on the original tok512.model, on 2,000 strings.
#include <cstdlib>
#include <sstream>

#include "test_strings.h"
#include "test_util.h"
#include "tokenizers/llama2c_tokenizer.h"

namespace loracpp::tokenizers {
namespace {

TEST(SentencePiece, Tok512BinAgreesWithSpmEncodeOn2000Strings) {
  const auto model = testing::shared_path("models/stories260K/tok512.model");
  const auto tokenizer = Llama2cTokenizer::load(testing::shared_path("models/stories260K/tok512.bin"), 512);
  const auto strings = testing::tokenizer_test_strings(2000, 3, /*newlines=*/false);
  testing::TempDir dir;
  std::string lines;
  for (const auto& s : strings) lines += s + "\n";
  testing::write_text(dir / "strings.txt", lines);
  const std::string command = "spm_encode --model " + model + " --output_format=id < " + (dir / "strings.txt").string() +
                              " > " + (dir / "ids.txt").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command << "\n(bash scripts/setup.sh installs Debian's sentencepiece)";
  std::istringstream expected(testing::read_text(dir / "ids.txt"));
  std::string line;
  int mismatches = 0;
  for (std::size_t i = 0; i < strings.size(); ++i) {
    ASSERT_TRUE(std::getline(expected, line)) << "spm_encode returned fewer lines";
    std::vector<std::int64_t> want;
    std::istringstream ids(line);
    for (std::int64_t id; ids >> id;) want.push_back(id);
    const auto got = tokenizer.encode(strings[i], false, false);
    if (got != want && ++mismatches <= 5)
      ADD_FAILURE() << "string " << i << ": '" << strings[i] << "' got " << nlohmann::json(got).dump() << " expected "
                    << nlohmann::json(want).dump();
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(SentencePiece, DecodeInvertsEncodeUpToWhitespaceNormalisation) {
  const auto tokenizer = Llama2cTokenizer::load(testing::shared_path("models/stories260K/tok512.bin"), 512);
  for (const auto& s : testing::tokenizer_test_strings(300, 4)) {
    std::string normalized;
    for (char c : s)
      if (!(c == ' ' && (normalized.empty() || normalized.back() == ' '))) normalized.push_back(c);
    while (!normalized.empty() && normalized.back() == ' ') normalized.pop_back();
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(s, true, false)), normalized) << s;
  }
}

}  // namespace
}  // namespace loracpp::tokenizers
