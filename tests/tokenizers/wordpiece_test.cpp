// WordPiece (BERT) from tokenizer.json: BERT's normaliser and pre-tokenizer, greedy
// longest-match-first pieces, [CLS]/[SEP], and the decoder; on a small vocabulary whose expected
// pieces follow from the algorithm's definition.
#include "tokenizers/wordpiece.h"

#include "core/error.h"
#include "test_util.h"

namespace loracpp::tokenizers {
namespace {

nlohmann::json bert_json() {
  const std::vector<std::string> pieces = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "un", "##aff", "##able", ",", "!",
                                           "cafe", "\u6211", "##s", "runner", "run", "##ner", "[MASK]"};
  nlohmann::json vocab = nlohmann::json::object();
  for (std::size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = i;
  nlohmann::json added = nlohmann::json::array();
  for (const char* special : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    added.push_back({{"id", vocab[special]}, {"content", special}, {"special", true}});
  return {{"added_tokens", added},
          {"normalizer", {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
                          {"strip_accents", nullptr}, {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
                     {"max_input_chars_per_word", 100}, {"vocab", vocab}}}};
}

using Ids = std::vector<std::int64_t>;

TEST(WordPiece, SplitsWordsIntoLongestPiecesFirst) {
  const auto t = WordPiece::from_json(bert_json(), "bert");
  EXPECT_EQ(t->encode("Unaffable, the RUNNERs!", false, false), (Ids{5, 6, 7, 8, 4, 13, 12, 9}));
  EXPECT_EQ(t->encode("runs", false, false), (Ids{14, 12}));
  EXPECT_EQ(t->encode("unknowable", false, false), (Ids{1}));  // one unmatched stretch: the whole word is [UNK]
}

TEST(WordPiece, NormalisesAccentsControlsAndIdeographs) {
  const auto t = WordPiece::from_json(bert_json(), "bert");
  EXPECT_EQ(t->encode("Caf\u00e9", false, false), (Ids{10}));         // lowercased, accent stripped
  EXPECT_EQ(t->encode("the\x07  un", false, false), (Ids{4, 5}));     // control removed, spaces split
  EXPECT_EQ(t->encode("\u6211\u7684", false, false), (Ids{11, 1}));  // each ideograph is a word
  EXPECT_EQ(t->encode("the[MASK]run", false, false), (Ids{4, 16, 14}));
}

TEST(WordPiece, AddsClsAndSepAndDecodes) {
  const auto t = WordPiece::from_json(bert_json(), "bert");
  const auto ids = t->encode("the runners, unaffable!", true, true);
  EXPECT_EQ(ids.front(), 2);
  EXPECT_EQ(ids.back(), 3);
  EXPECT_EQ(t->decode(ids), "the runners, unaffable!");
}

TEST(WordPiece, RefusesWhatItDoesNotRead) {
  auto j = bert_json();
  j["model"]["unk_token"] = "<unk>";
  EXPECT_THROW(WordPiece::from_json(j, "bert"), Error);
  j = bert_json();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THROW(WordPiece::from_json(j, "bert"), Error);
}

}  // namespace
}  // namespace loracpp::tokenizers
