#include "data/token_dataset.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace loracpp::data {

namespace {
constexpr std::string_view kPlace = "data";
}  // namespace

Packing parse_packing(std::string_view name) {
  for (auto p : {Packing::stream, Packing::packed, Packing::padded})
    if (packing_name(p) == name) return p;
  fail(kPlace, "unknown packing '{}'; expected stream, packed or padded", name);
}

std::string_view packing_name(Packing packing) {
  switch (packing) {
    case Packing::stream: return "stream";
    case Packing::packed: return "packed";
    case Packing::padded: return "padded";
  }
  return "?";
}

TokenDataset::TokenDataset(const std::vector<TokenizedExample>& examples, std::int64_t seq_len, Packing packing,
                           std::int64_t pad_id, const std::string& source)
    : seq_len_(seq_len), packing_(packing) {
  build(examples, pad_id, source);
}

TokenDataset::TokenDataset(const std::vector<std::string>& documents, const tokenizers::Tokenizer& tokenizer,
                           std::int64_t seq_len, const std::string& source)
    : seq_len_(seq_len), packing_(Packing::stream) {
  std::vector<TokenizedExample> examples;
  examples.reserve(documents.size());
  for (const auto& doc : documents) {
    TokenizedExample e{tokenizer.encode(doc, /*add_bos=*/true, /*add_eos=*/true), {}};
    e.trained.assign(e.ids.size(), 1);
    examples.push_back(std::move(e));
  }
  build(examples, std::max<std::int64_t>(tokenizer.eos_id(), 0), source);
}

void TokenDataset::build(const std::vector<TokenizedExample>& examples, std::int64_t pad_id,
                         const std::string& source) {
  check(seq_len_ >= 1, kPlace, "sequence length must be positive, got {}", seq_len_);
  const auto seq = static_cast<std::size_t>(seq_len_);
  examples_ = static_cast<std::int64_t>(examples.size());
  auto add_window = [&]() {
    inputs_.resize(inputs_.size() + seq, pad_id);
    targets_.resize(targets_.size() + seq, kIgnore);
    example_.resize(example_.size() + seq, -1);
    ++count_;
  };
  if (packing_ == Packing::stream) {
    std::vector<std::int64_t> ids;
    std::vector<std::uint8_t> trained;
    for (const auto& e : examples) {
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
      trained.insert(trained.end(), e.trained.begin(), e.trained.end());
    }
    tokens_ = static_cast<std::int64_t>(ids.size());
    for (std::size_t start = 0; start + seq + 1 <= ids.size(); start += seq) {
      add_window();
      const std::size_t base = static_cast<std::size_t>(count_ - 1) * seq;
      for (std::size_t t = 0; t < seq; ++t) {
        inputs_[base + t] = ids[start + t];
        if (trained[start + t + 1]) targets_[base + t] = ids[start + t + 1];
        example_[base + t] = 0;
      }
    }
    check(count_ > 0, kPlace, "{} has {} tokens, fewer than one sequence of {} + 1", source, ids.size(), seq_len_);
  } else {
    std::size_t used = seq;  // positions filled in the current window; seq forces a new one
    std::int32_t in_window = 0;
    for (const auto& e : examples) {
      std::size_t length = e.ids.size();
      if (length > seq) {
        ++truncated_examples_;
        truncated_tokens_ += static_cast<std::int64_t>(length - seq);
        length = seq;
      }
      if (length == 0) continue;
      if (packing_ == Packing::padded || used + length > seq) {
        add_window();
        used = 0;
        in_window = 0;
      }
      const std::size_t base = static_cast<std::size_t>(count_ - 1) * seq + used;
      for (std::size_t t = 0; t < length; ++t) {
        inputs_[base + t] = e.ids[t];
        if (t + 1 < length && e.trained[t + 1]) targets_[base + t] = e.ids[t + 1];
        example_[base + t] = in_window;
      }
      used += length;
      ++in_window;
      tokens_ += static_cast<std::int64_t>(length);
    }
    check(count_ > 0, kPlace, "{} holds no tokens", source);
  }
  padding_ = count_ * seq_len_ - (packing_ == Packing::stream ? count_ * seq_len_ : tokens_);
  trained_ = std::count_if(targets_.begin(), targets_.end(), [](std::int64_t t) { return t != kIgnore; });
  check(trained_ > 0, kPlace,
        "{} leaves no token to learn from: every target is masked or cut off ({} of {} examples longer than "
        "--seq-len {} were truncated)",
        source, truncated_examples_, examples_, seq_len_);
}

std::vector<std::int64_t> TokenDataset::inputs(std::int64_t i) const {
  const auto start = inputs_.begin() + i * seq_len_;
  return {start, start + seq_len_};
}

std::vector<std::int64_t> TokenDataset::targets(std::int64_t i) const {
  const auto start = targets_.begin() + i * seq_len_;
  return {start, start + seq_len_};
}

std::vector<std::int32_t> TokenDataset::example_of(std::int64_t i) const {
  const auto start = example_.begin() + i * seq_len_;
  return {start, start + seq_len_};
}

BatchOrder::BatchOrder(std::int64_t sequences, std::uint64_t seed) : sequences_(sequences), seed_(seed) {
  check(sequences > 0, kPlace, "no sequences to batch");
  shuffle();
}

void BatchOrder::shuffle() {
  order_.resize(static_cast<std::size_t>(sequences_));
  std::iota(order_.begin(), order_.end(), 0);
  Rng rng(mix64(seed_ + static_cast<std::uint64_t>(epoch_)));
  for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.next_u64() % i]);
}

std::vector<std::int64_t> BatchOrder::next(std::int64_t count) {
  std::vector<std::int64_t> out;
  while (static_cast<std::int64_t>(out.size()) < count) {
    if (offset_ == sequences_) {
      ++epoch_;
      offset_ = 0;
      shuffle();
    }
    out.push_back(order_[static_cast<std::size_t>(offset_++)]);
  }
  return out;
}

void BatchOrder::seek(std::int64_t epoch, std::int64_t offset) {
  check(epoch >= 0 && offset >= 0 && offset <= sequences_, kPlace, "data position ({}, {}) is outside {} sequences",
        epoch, offset, sequences_);
  epoch_ = epoch;
  offset_ = offset;
  shuffle();
}

}  // namespace loracpp::data
