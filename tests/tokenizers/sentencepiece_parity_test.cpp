// stories260K's tokenizer: llama2.c's tok512.bin, and the same model as a HuggingFace
// tokenizer.json (tests/fixtures/tokenizers/tok512, written by tools/make_spm_tokenizer_json.py),
// must give the ids of Debian's SentencePiece (spm_encode) on the original tok512.model, on 2,000
// strings.
#include <cstdlib>
#include <sstream>

#include "data/records.h"
#include "test_strings.h"
#include "test_util.h"
#include "tokenizers/llama2c_tokenizer.h"
#include "tokenizers/sentencepiece_bpe.h"
#include "tokenizers/tokenizer_json.h"

namespace loracpp::tokenizers {
namespace {

bool data_is_utf8(const std::string& s) { return data::valid_utf8(s); }

// spm_encode's ids for each string, one line each.
std::vector<std::vector<std::int64_t>> spm_encode(const std::vector<std::string>& strings) {
  testing::TempDir dir;
  std::string lines;
  for (const auto& s : strings) lines += s + "\n";
  testing::write_text(dir / "strings.txt", lines);
  const std::string command = "spm_encode --model " + testing::shared_path("models/stories260K/tok512.model") +
                              " --output_format=id < " + (dir / "strings.txt").string() + " > " +
                              (dir / "ids.txt").string();
  EXPECT_EQ(std::system(command.c_str()), 0) << command << "\n(bash scripts/setup.sh installs Debian's sentencepiece)";
  std::istringstream expected(testing::read_text(dir / "ids.txt"));
  std::vector<std::vector<std::int64_t>> out;
  for (std::string line; std::getline(expected, line);) {
    std::vector<std::int64_t> want;
    std::istringstream ids(line);
    for (std::int64_t id; ids >> id;) want.push_back(id);
    out.push_back(std::move(want));
  }
  EXPECT_EQ(out.size(), strings.size()) << "spm_encode returned another number of lines";
  return out;
}

// SentencePiece's remove_extra_whitespaces, which tokenizer.json normalisers do not do.
std::string collapse_spaces(const std::string& s) {
  std::string out;
  for (char c : s)
    if (!(c == ' ' && (out.empty() || out.back() == ' '))) out.push_back(c);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

void expect_same_ids(const Tokenizer& tokenizer, const std::vector<std::string>& strings) {
  const auto want = spm_encode(strings);
  int mismatches = 0;
  for (std::size_t i = 0; i < std::min(strings.size(), want.size()); ++i) {
    const auto got = tokenizer.encode(strings[i], false, false);
    if (got != want[i] && ++mismatches <= 5)
      ADD_FAILURE() << "string " << i << ": '" << strings[i] << "' got " << nlohmann::json(got).dump() << " expected "
                    << nlohmann::json(want[i]).dump();
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(SentencePiece, Tok512BinAgreesWithSpmEncodeOn2000Strings) {
  const auto tokenizer = Llama2cTokenizer::load(testing::shared_path("models/stories260K/tok512.bin"), 512);
  expect_same_ids(tokenizer, testing::tokenizer_test_strings(2000, 3, /*newlines=*/false));
}

TEST(SentencePiece, TokenizerJsonWithByteFallbackAgreesWithSpmEncodeOn2000Strings) {
  const auto tokenizer = load_tokenizer_json(testing::fixture_path("tokenizers/tok512"));
  EXPECT_EQ(tokenizer->vocab_size(), 512);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  std::vector<std::string> strings;
  for (const auto& s : testing::tokenizer_test_strings(2000, 5, /*newlines=*/false)) strings.push_back(collapse_spaces(s));
  expect_same_ids(*tokenizer, strings);
  for (const auto& s : strings) {
    if (s.empty() || !data_is_utf8(s)) continue;
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(s, true, false)), s) << s;
  }
}

TEST(SentencePiece, MetaspacePreTokenizerMatchesTheLegacyNormaliserExceptAfterAddedTokens) {
  auto json = nlohmann::json::parse(testing::read_text(testing::fixture_path("tokenizers/tok512/tokenizer.json")));
  const auto legacy = SentencePieceBpe::from_json(json, "legacy");
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
  const auto metaspace = SentencePieceBpe::from_json(json, "metaspace");
  // Metaspace adds no second space to text that starts with one; the legacy normaliser does.
  for (const auto& s : testing::tokenizer_test_strings(300, 9, /*newlines=*/false))
    if (!s.starts_with(' ')) {
      EXPECT_EQ(metaspace->encode(s, false, false), legacy->encode(s, false, false)) << s;
    }
  EXPECT_EQ(metaspace->encode(" x", false, false).size() + 1, legacy->encode(" x", false, false).size());
  // The legacy normaliser prepends a space to the text after an added token; "first" does not.
  const auto with_legacy = legacy->encode("a cat</s>sat", false, false);
  const auto with_first = metaspace->encode("a cat</s>sat", false, false);
  EXPECT_NE(with_legacy, with_first);
  EXPECT_EQ(legacy->decode_piece(2, with_legacy[with_legacy.size() - 1]).front() == ' ' ||
                legacy->decode_piece(2, with_legacy[with_legacy.size() - 2]).front() == ' ',
            true);
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
