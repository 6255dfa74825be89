#pragma once
// WordPiece (BERT) from tokenizer.json: the BERT normaliser (control characters removed, spaces
// around CJK ideographs, optional lowercasing and accent stripping, through ICU's character
// properties), splitting on white space and punctuation, then greedy longest-match-first pieces
// with the "##" continuation prefix. BOS/EOS are [CLS]/[SEP].
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizers/tokenizer_json.h"

namespace loracpp::tokenizers {

class WordPiece : public Tokenizer {
 public:
  static std::unique_ptr<WordPiece> from_json(const nlohmann::json& json, const std::string& file);

  std::vector<std::int64_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::string decode_piece(std::int64_t previous, std::int64_t token) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(vocab_.pieces.size()); }
  std::int64_t bos_id() const override { return cls_; }
  std::int64_t eos_id() const override { return sep_; }

 private:
  WordPiece() = default;
  std::string normalize(std::string_view text) const;
  void encode_word(std::string_view word, std::vector<std::int64_t>& out) const;
  JsonVocabulary vocab_;
  std::string prefix_ = "##";
  std::int64_t unk_ = -1, cls_ = -1, sep_ = -1;
  std::size_t max_chars_ = 100;
  bool lowercase_ = true, strip_accents_ = true, chinese_chars_ = true, clean_text_ = true;
};

}  // namespace loracpp::tokenizers
