#pragma once
// SentencePiece-style BPE as HuggingFace tokenizer.json describes it (Llama 2, TinyLlama,
// Mistral): spaces are spelled U+2581 ("▁") by a Prepend/Replace normaliser or a Metaspace
// pre-tokenizer, the text is split into characters, characters missing from the vocabulary fall
// back to <0xXX> byte pieces (byte_fallback) or <unk>, and merges apply by rank.
#include <array>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizers/bpe_merge.h"
#include "tokenizers/tokenizer_json.h"

namespace loracpp::tokenizers {

class SentencePieceBpe : public Tokenizer {
 public:
  static std::unique_ptr<SentencePieceBpe> from_json(const nlohmann::json& json, const std::string& file,
                                                     std::int64_t bos_id = -1, std::int64_t eos_id = -1);

  std::vector<std::int64_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::string decode_piece(std::int64_t previous, std::int64_t token) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(vocab_.pieces.size()); }
  std::int64_t bos_id() const override { return bos_; }
  std::int64_t eos_id() const override { return eos_; }

 private:
  SentencePieceBpe() = default;
  // One normalised word (▁ for spaces) -> ids.
  void encode_word(std::string_view word, std::vector<std::int64_t>& out) const;
  struct NormalizerStep {
    enum class Kind { prepend, replace, unicode } kind;
    std::string from, to;  // prepend: to; replace: from -> to
    UnicodeForm form = UnicodeForm::nfc;
  };
  enum class PrependScheme { never, first, always };
  JsonVocabulary vocab_;
  std::unordered_map<std::uint64_t, PairMerge> merges_;
  std::array<std::int64_t, 256> byte_ids_{};  // <0xXX> pieces; -1 where missing
  std::array<std::int64_t, 128> ascii_ids_{};  // one-character ASCII pieces; -1 where missing
  bool byte_fallback_ = false, fuse_unk_ = false;
  std::int64_t unk_ = -1, bos_ = -1, eos_ = -1;
  std::vector<NormalizerStep> normalizers_;
  bool metaspace_ = false;  // a Metaspace pre-tokenizer
  std::string replacement_ = "\u2581";
  PrependScheme prepend_scheme_ = PrependScheme::always;
  bool split_words_ = false;
};

}  // namespace loracpp::tokenizers
