#pragma once
// llama2.c's tokenizer.bin: int32 max_token_length, then per token an f32 merge score, an int32
// length and the bytes. Encoding is SentencePiece-style BPE: start from UTF-8 characters (bytes
// <0xXX> as fallback, ids 3..258), then repeatedly merge the adjacent pair whose merged piece has
// the highest score. BOS = 1, EOS = 2. Text is first normalised as SentencePiece does by default
// (remove_extra_whitespaces), so ids agree with the .model file the vocabulary came from; llama2.c's
// run.c skips that step, which differs only for text with leading, trailing or repeated spaces.
#include <filesystem>
#include <unordered_map>

#include "tokenizers/tokenizer.h"

namespace loracpp::tokenizers {

class Llama2cTokenizer : public Tokenizer {
 public:
  static Llama2cTokenizer load(const std::filesystem::path& path, std::int64_t vocab_size);
  // 259 tokens: <unk>, <s>, </s> and the 256 bytes; text is spelled byte by byte.
  static Llama2cTokenizer bytes();
  static Llama2cTokenizer from_pieces(std::vector<std::string> pieces, std::vector<float> scores);
  // Writes tokenizer.bin atomically.
  void save(const std::filesystem::path& path) const;

  std::vector<std::int64_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  std::string decode_piece(std::int64_t previous, std::int64_t token) const override;
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(pieces_.size()); }
  std::int64_t bos_id() const override { return 1; }
  std::int64_t eos_id() const override { return 2; }
  const std::string& piece(std::int64_t id) const { return pieces_.at(static_cast<std::size_t>(id)); }
  float score(std::int64_t id) const { return scores_.at(static_cast<std::size_t>(id)); }

 private:
  std::int64_t lookup(const std::string& piece) const;
  void index_pairs();
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int64_t> ids_;
  std::vector<std::int64_t> canonical_;                         // id -> the first id of its piece
  std::unordered_map<std::uint64_t, std::int64_t> pair_merges_;  // (left, right) -> merged id
};

}  // namespace loracpp::tokenizers
