#pragma once
// Byte-level BPE as HuggingFace tokenizer.json describes it (GPT-2, Llama 3, Qwen2, SmolLM): text
// is split around added tokens, pre-tokenised by a regex with Unicode categories (PCRE2), each
// piece's bytes are spelled with GPT-2's printable byte alphabet, and merges are applied by rank.
// Unicode normalisers (NFC, NFKC, NFD, NFKD) run through ICU.
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizers/tokenizer.h"

namespace loracpp::tokenizers {

class ByteLevelBpe : public Tokenizer {
 public:
  // A tokenizer.json (its path named in errors); bos/eos ids from tokenizer_config.json when known.
  static std::unique_ptr<ByteLevelBpe> from_json(const nlohmann::json& json, const std::string& file,
                                                 std::int64_t bos_id = -1, std::int64_t eos_id = -1);
  ~ByteLevelBpe() override;

  std::vector<std::int64_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::string decode_piece(std::int64_t previous, std::int64_t token) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(pieces_.size()); }
  std::int64_t bos_id() const override { return bos_; }
  std::int64_t eos_id() const override { return eos_; }

 private:
  ByteLevelBpe() = default;
  void encode_piece(std::string_view bytes, std::vector<std::int64_t>& out) const;
  std::vector<std::string> pieces_;                          // id -> token text (byte alphabet)
  std::unordered_map<std::string, std::int64_t> vocab_;      // token text -> id
  std::unordered_map<std::string, std::int64_t> merge_rank_;  // "left right" -> rank
  std::vector<std::pair<std::string, std::int64_t>> added_;   // added tokens, longest first
  std::vector<bool> special_;
  struct Regex;
  std::unique_ptr<Regex> regex_;
  enum class Normalization { none, nfc, nfkc, nfd, nfkd };
  std::vector<Normalization> normalizers_;
  std::string normalize(std::string_view text) const;
  bool ignore_merges_ = false;
  bool add_prefix_space_ = false;
  std::int64_t bos_ = -1, eos_ = -1;
  mutable std::unordered_map<std::string, std::vector<std::int64_t>> cache_;
};

// Loads tokenizer.json (+ tokenizer_config.json) from a HuggingFace folder; throws for model types
// not supported yet.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& folder);

}  // namespace loracpp::tokenizers
