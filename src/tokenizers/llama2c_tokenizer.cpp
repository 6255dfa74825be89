#include "tokenizers/llama2c_tokenizer.h"

#include <cctype>
#include <cstring>

#include "core/storage.h"
#include "tokenizers/bpe_merge.h"
#include "core/error.h"
#include "io/atomic_file.h"

namespace loracpp::tokenizers {

namespace {
constexpr std::string_view kPlace = "tokenizer";
}

Llama2cTokenizer Llama2cTokenizer::load(const std::filesystem::path& path, std::int64_t vocab_size) {
  const std::string file = path.string();
  const auto storage = Storage::map_file(path);
  const std::byte* data = storage->data();
  const std::size_t size = storage->nbytes();
  std::size_t at = 0;
  auto read = [&](void* dst, std::size_t n, std::int64_t token) {
    check(at + n <= size, kPlace, "file ends inside token {} of {} ({})", token, vocab_size, file);
    std::memcpy(dst, data + at, n);
    at += n;
  };
  std::int32_t max_length = 0;
  read(&max_length, 4, 0);
  check(max_length > 0, kPlace, "max_token_length {} must be positive ({})", max_length, file);
  Llama2cTokenizer t;
  for (std::int64_t i = 0; i < vocab_size; ++i) {
    float score = 0;
    std::int32_t length = 0;
    read(&score, 4, i);
    read(&length, 4, i);
    check(length >= 0 && length <= max_length, kPlace, "token {} has length {}, expected 0..{} ({})", i, length,
          max_length, file);
    std::string piece(static_cast<std::size_t>(length), '\0');
    read(piece.data(), piece.size(), i);
    t.ids_.emplace(piece, i);  // the first id of a repeated piece wins, as in run.c's sorted lookup
    t.pieces_.push_back(std::move(piece));
    t.scores_.push_back(score);
  }
  t.index_pairs();
  check(t.pieces_.size() >= 259, kPlace, "a vocabulary of {} tokens has no room for the 256 byte tokens ({})",
        t.pieces_.size(), file);
  return t;
}

Llama2cTokenizer Llama2cTokenizer::from_pieces(std::vector<std::string> pieces, std::vector<float> scores) {
  check(pieces.size() == scores.size() && pieces.size() >= 259, kPlace,
        "a vocabulary needs one score per piece and room for 256 byte tokens, got {} pieces and {} scores",
        pieces.size(), scores.size());
  Llama2cTokenizer t;
  for (std::size_t i = 0; i < pieces.size(); ++i) t.ids_.emplace(pieces[i], static_cast<std::int64_t>(i));
  t.pieces_ = std::move(pieces);
  t.scores_ = std::move(scores);
  t.index_pairs();
  return t;
}

Llama2cTokenizer Llama2cTokenizer::bytes() {
  std::vector<std::string> pieces{"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b));
  return from_pieces(pieces, std::vector<float>(pieces.size(), 0.0f));
}

void Llama2cTokenizer::save(const std::filesystem::path& path) const {
  io::write_file_atomically(path, [&](std::ostream& out) {
    std::int32_t max_length = 0;
    for (const auto& p : pieces_) max_length = std::max(max_length, static_cast<std::int32_t>(p.size()));
    out.write(reinterpret_cast<const char*>(&max_length), 4);
    for (std::size_t i = 0; i < pieces_.size(); ++i) {
      const auto length = static_cast<std::int32_t>(pieces_[i].size());
      out.write(reinterpret_cast<const char*>(&scores_[i]), 4);
      out.write(reinterpret_cast<const char*>(&length), 4);
      out.write(pieces_[i].data(), length);
    }
  });
}

void Llama2cTokenizer::index_pairs() {
  canonical_.resize(pieces_.size());
  for (std::size_t i = 0; i < pieces_.size(); ++i) canonical_[i] = lookup(pieces_[i]);
  // Every way to spell a piece as two pieces: the pairs that merge into it.
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const std::string& p = pieces_[i];
    const auto merged = canonical_[i];
    if (merged != static_cast<std::int64_t>(i)) continue;  // a repeated piece: the first id stands for it
    for (std::size_t cut = 1; cut < p.size(); ++cut) {
      const auto left = lookup(p.substr(0, cut)), right = lookup(p.substr(cut));
      if (left >= 0 && right >= 0) pair_merges_.emplace(pair_key(left, right), merged);
    }
  }
}

std::int64_t Llama2cTokenizer::lookup(const std::string& piece) const {
  const auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<std::int64_t> Llama2cTokenizer::encode(std::string_view raw, bool add_bos, bool add_eos) const {
  // SentencePiece's remove_extra_whitespaces: no leading or trailing spaces, runs of spaces as one.
  std::string normalized;
  for (char c : raw) {
    if (c == ' ' && (normalized.empty() || normalized.back() == ' ')) continue;
    normalized.push_back(c);
  }
  if (!normalized.empty() && normalized.back() == ' ') normalized.pop_back();
  const std::string_view text = normalized;
  std::vector<std::int64_t> tokens;
  if (add_bos) tokens.push_back(bos_id());
  // SentencePiece's add_dummy_prefix: a leading space, when there is any text.
  if (!text.empty()) {
    const auto space = lookup(" ");
    if (space >= 0) tokens.push_back(space);
  }
  // Characters first: a lead byte with up to three continuation bytes; unknown ones fall back to bytes.
  std::string character;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) character.clear();
    character.push_back(text[i]);
    const bool continues = i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
    if (continues && character.size() < 4) continue;
    const auto id = lookup(character);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (unsigned char byte : character) tokens.push_back(static_cast<std::int64_t>(byte) + 3);
    }
    character.clear();
  }
  // Merge the best-scoring adjacent pair until none merges.
  bpe_merge(tokens, [&](std::int64_t a, std::int64_t b) -> std::optional<PairMerge> {
    const auto it = pair_merges_.find(pair_key(canonical_[static_cast<std::size_t>(a)], canonical_[static_cast<std::size_t>(b)]));
    if (it == pair_merges_.end()) return std::nullopt;
    return PairMerge{it->second, score(it->second)};
  });
  if (add_eos) tokens.push_back(eos_id());
  return tokens;
}

std::string Llama2cTokenizer::decode_piece(std::int64_t previous, std::int64_t token) const {
  check(token >= 0 && token < vocab_size(), kPlace, "token id {} is out of range [0, {})", token, vocab_size());
  std::string text = piece(token);
  if (previous == bos_id() && !text.empty() && text[0] == ' ') text.erase(0, 1);
  // Raw bytes appear as <0xXX>.
  unsigned int byte = 0;
  if (text.size() == 6 && std::sscanf(text.c_str(), "<0x%02X>", &byte) == 1) text = std::string(1, static_cast<char>(byte));
  // Like run.c, drop a lone control byte that is not white space; bytes of 0x80 and up are kept,
  // as parts of UTF-8 characters spelled out byte by byte.
  if (text.size() == 1) {
    const auto c = static_cast<unsigned char>(text[0]);
    if ((c < 0x20 || c == 0x7F) && !std::isspace(c)) return {};
  }
  return text;
}

}  // namespace loracpp::tokenizers
