#include "data/text_dataset.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "core/error.h"

namespace loracpp::data {

namespace {
constexpr std::string_view kPlace = "data";

std::string trim_newlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && (s[start] == '\n' || s[start] == '\r')) ++start;
  return s.substr(start);
}

bool valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || i + static_cast<std::size_t>(extra) >= s.size() + (extra == 0 ? 1 : 0)) return false;
    for (int k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]) & 0xC0) != 0x80) return false;
    i += static_cast<std::size_t>(extra) + 1;
  }
  return true;
}
}  // namespace

std::vector<std::string> read_documents(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  check(in.good(), kPlace, "cannot read {}", file);
  std::vector<std::string> docs;
  std::string line;
  if (path.extension() == ".jsonl") {
    std::int64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail(kPlace, "line {} is not valid JSON: {} ({})", number, e.what(), file);
      }
      check(j.is_object() && j.contains("text") && j["text"].is_string(), kPlace,
            "line {} needs a string field 'text' ({})", number, file);
      docs.push_back(j["text"].get<std::string>());
    }
  } else {
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::string text = buffer.str();
    check(valid_utf8(text), kPlace, "{} is not valid UTF-8 text", file);
    std::istringstream lines(text);
    std::vector<std::string> all;
    bool percent = false;
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      percent |= line == "%";
      all.push_back(line);
    }
    std::string current;
    for (const auto& l : all) {
      const bool separator = percent ? l == "%" : l.find_first_not_of(" \t") == std::string::npos;
      if (separator) {
        if (!trim_newlines(current).empty()) docs.push_back(trim_newlines(current));
        current.clear();
      } else {
        current += l + "\n";
      }
    }
    if (!trim_newlines(current).empty()) docs.push_back(trim_newlines(current));
  }
  check(!docs.empty(), kPlace, "{} holds no documents", file);
  return docs;
}

std::pair<std::vector<std::string>, std::vector<std::string>> split_documents(std::vector<std::string> documents,
                                                                              double validation_fraction,
                                                                              std::uint64_t seed) {
  check(validation_fraction >= 0 && validation_fraction < 1, kPlace, "validation fraction must be in [0, 1), got {}",
        validation_fraction);
  Rng rng(seed);
  for (std::size_t i = documents.size(); i > 1; --i) std::swap(documents[i - 1], documents[rng.next_u64() % i]);
  const auto held = static_cast<std::size_t>(static_cast<double>(documents.size()) * validation_fraction + 0.5);
  std::vector<std::string> validation(documents.end() - static_cast<std::ptrdiff_t>(held), documents.end());
  documents.resize(documents.size() - held);
  return {std::move(documents), std::move(validation)};
}

TokenDataset::TokenDataset(const std::vector<std::string>& documents, const tokenizers::Tokenizer& tokenizer,
                           std::int64_t seq_len, const std::string& source)
    : seq_len_(seq_len) {
  check(seq_len >= 1, kPlace, "sequence length must be positive, got {}", seq_len);
  for (const auto& doc : documents) {
    const auto ids = tokenizer.encode(doc, /*add_bos=*/true, /*add_eos=*/true);
    stream_.insert(stream_.end(), ids.begin(), ids.end());
  }
  for (std::int64_t start = 0; start + seq_len + 1 <= static_cast<std::int64_t>(stream_.size()); start += seq_len)
    starts_.push_back(start);
  check(!starts_.empty(), kPlace, "{} has {} tokens, fewer than one sequence of {} + 1", source, stream_.size(),
        seq_len);
}

std::vector<std::int64_t> TokenDataset::sequence(std::int64_t i) const {
  const auto start = stream_.begin() + starts_.at(static_cast<std::size_t>(i));
  return {start, start + seq_len_ + 1};
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
