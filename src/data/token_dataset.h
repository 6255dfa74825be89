#pragma once
// Token sequences for training and evaluation, built from tokenized examples in one of three
// layouts:
// - stream: examples concatenated and cut into equal windows (pretraining on plain text; a
//   window may span examples, and attention crosses them);
// - packed: whole examples packed greedily into windows, each example attending only to itself
//   (rotary positions are relative, so this is exact without restarting positions), the rest of a
//   window padded; examples longer than a window are truncated and counted;
// - padded: one example per window, padded.
// Targets the loss should skip (prompts, padding, across example boundaries) are kIgnore.
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "data/examples.h"

namespace loracpp::data {

inline constexpr std::int64_t kIgnore = -100;

enum class Packing { stream, packed, padded };
Packing parse_packing(std::string_view name);
std::string_view packing_name(Packing packing);

// Splits items into train and validation by a seeded shuffle; `fraction` of them to validation.
template <class T>
std::pair<std::vector<T>, std::vector<T>> split_items(std::vector<T> items, double fraction, std::uint64_t seed);

class TokenDataset {
 public:
  TokenDataset() = default;
  TokenDataset(const std::vector<TokenizedExample>& examples, std::int64_t seq_len, Packing packing,
               std::int64_t pad_id, const std::string& source);
  // Plain-text documents, streamed: each wrapped in BOS ... EOS and all of it trained.
  TokenDataset(const std::vector<std::string>& documents, const tokenizers::Tokenizer& tokenizer, std::int64_t seq_len,
               const std::string& source);

  std::int64_t sequences() const { return count_; }
  std::int64_t seq_len() const { return seq_len_; }
  Packing packing() const { return packing_; }
  // Positions of sequence i: seq_len inputs, their targets (kIgnore where no loss), and which
  // example each input belongs to (-1 for padding).
  std::vector<std::int64_t> inputs(std::int64_t i) const;
  std::vector<std::int64_t> targets(std::int64_t i) const;
  std::vector<std::int32_t> example_of(std::int64_t i) const;
  bool isolates_examples() const { return packing_ != Packing::stream; }

  // Statistics for `lora data` and progress lines.
  std::int64_t examples() const { return examples_; }
  std::int64_t tokens() const { return tokens_; }                // example tokens kept
  std::int64_t trained_tokens() const { return trained_; }       // targets with loss
  std::int64_t padding() const { return padding_; }              // padded positions
  std::int64_t truncated_examples() const { return truncated_examples_; }
  std::int64_t truncated_tokens() const { return truncated_tokens_; }

 private:
  void build(const std::vector<TokenizedExample>& examples, std::int64_t pad_id, const std::string& source);
  std::vector<std::int64_t> inputs_, targets_;  // count_ x seq_len each
  std::vector<std::int32_t> example_;
  std::int64_t count_ = 0, seq_len_ = 0;
  Packing packing_ = Packing::stream;
  std::int64_t examples_ = 0, tokens_ = 0, trained_ = 0, padding_ = 0, truncated_examples_ = 0, truncated_tokens_ = 0;
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

template <class T>
std::pair<std::vector<T>, std::vector<T>> split_items(std::vector<T> items, double fraction, std::uint64_t seed) {
  if (!(fraction >= 0 && fraction < 1)) fail("data", "validation fraction must be in [0, 1), got {}", fraction);
  Rng rng(seed);
  for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.next_u64() % i]);
  const auto held = static_cast<std::size_t>(static_cast<double>(items.size()) * fraction + 0.5);
  std::vector<T> validation(std::make_move_iterator(items.end() - static_cast<std::ptrdiff_t>(held)),
                            std::make_move_iterator(items.end()));
  items.resize(items.size() - held);
  return {std::move(items), std::move(validation)};
}

}  // namespace loracpp::data
