#pragma once
// Byte-level BPE as HuggingFace tokenizer.json describes it (GPT-2, Llama 3, Qwen2, SmolLM): text
// is split around added tokens, pre-tokenised by a regex with Unicode categories (PCRE2), each
// piece's bytes are spelled with GPT-2's printable byte alphabet, and merges are applied by rank.
// Unicode normalisers (NFC, NFKC, NFD, NFKD) run through ICU.
#include <array>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizers/bpe_merge.h"
#include "tokenizers/tokenizer_json.h"

namespace loracpp::tokenizers {

class ByteLevelBpe : public Tokenizer {
 public:
  // A tokenizer.json (its path named in errors); bos/eos ids from tokenizer_config.json when known.
  static std::unique_ptr<ByteLevelBpe> from_json(const nlohmann::json& json, const std::string& file,
                                                 std::int64_t bos_id = -1, std::int64_t eos_id = -1);
  ~ByteLevelBpe() override;

  std::vector<std::int64_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::string decode_piece(std::int64_t previous, std::int64_t token) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(vocab_.pieces.size()); }
  std::int64_t bos_id() const override { return bos_; }
  std::int64_t eos_id() const override { return eos_; }

 private:
  ByteLevelBpe() = default;
  void encode_piece(std::string_view bytes, std::vector<std::int64_t>& out) const;
  JsonVocabulary vocab_;
  std::unordered_map<std::uint64_t, PairMerge> merges_;  // (left, right) -> merged id, minus its rank
  std::array<std::int64_t, 256> byte_ids_{};              // byte -> its piece's id
  struct Regex;
  std::unique_ptr<Regex> regex_;
  std::vector<UnicodeForm> normalizers_;
  bool ignore_merges_ = false;
  bool add_prefix_space_ = false;
  std::int64_t bos_ = -1, eos_ = -1;
  mutable std::unordered_map<std::string, std::vector<std::int64_t>> cache_;
};

}  // namespace loracpp::tokenizers
