#pragma once
// Plain-text training data: documents from .txt files (separated by lines holding only "%", as
// fortune files are, or else by blank lines) or JSONL with a "text" field; tokenised, packed into
// one stream and cut into fixed-length sequences.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/random.h"
#include "tokenizers/tokenizer.h"

namespace loracpp::data {

// Reads the documents of a file; throws naming the file (and the line, for JSONL) on bad input.
std::vector<std::string> read_documents(const std::filesystem::path& path);

// Splits documents into train and validation by a seeded shuffle; fraction of them to validation.
std::pair<std::vector<std::string>, std::vector<std::string>> split_documents(std::vector<std::string> documents,
                                                                              double validation_fraction,
                                                                              std::uint64_t seed);

// Token sequences of seq_len + 1 (inputs and their next-token targets), packed from documents
// each wrapped in BOS ... EOS.
class TokenDataset {
 public:
  TokenDataset() = default;
  TokenDataset(const std::vector<std::string>& documents, const tokenizers::Tokenizer& tokenizer, std::int64_t seq_len,
               const std::string& source);
  std::int64_t sequences() const { return static_cast<std::int64_t>(starts_.size()); }
  std::int64_t seq_len() const { return seq_len_; }
  std::int64_t tokens() const { return static_cast<std::int64_t>(stream_.size()); }
  // Sequence i as seq_len + 1 ids.
  std::vector<std::int64_t> sequence(std::int64_t i) const;

 private:
  std::vector<std::int64_t> stream_;
  std::vector<std::int64_t> starts_;
  std::int64_t seq_len_ = 0;
};

// Which sequences make each batch: a seeded permutation per epoch, so a position (epoch, offset)
// says exactly where training is, and resuming from it replays the same batches.
class BatchOrder {
 public:
  BatchOrder(std::int64_t sequences, std::uint64_t seed);
  // The next `count` sequence indices, advancing the position (wrapping into new epochs).
  std::vector<std::int64_t> next(std::int64_t count);
  std::int64_t epoch() const { return epoch_; }
  std::int64_t offset() const { return offset_; }
  void seek(std::int64_t epoch, std::int64_t offset);

 private:
  void shuffle();
  std::int64_t sequences_;
  std::uint64_t seed_;
  std::int64_t epoch_ = 0, offset_ = 0;
  std::vector<std::int64_t> order_;
};

}  // namespace loracpp::data
