#include "tokenizers/sentencepiece_bpe.h"

#include "core/error.h"

namespace loracpp::tokenizers {

namespace {

constexpr std::string_view kPlace = "tokenizer";

std::size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
}

std::string replace_all(const std::string& text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  std::string out;
  out.reserve(text.size() + text.size() / 4 * to.size());
  std::size_t start = 0;
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, start)) {
    out.append(text, start, at - start);
    out += to;
    start = at + from.size();
  }
  out.append(text, start);
  return out;
}

std::vector<nlohmann::json> steps_of(const nlohmann::json& j, const char* list) {
  if (!j.is_object()) return {};
  if (j.value("type", std::string()) == "Sequence" && j.contains(list)) return j[list].get<std::vector<nlohmann::json>>();
  return {j};
}

}  // namespace

std::unique_ptr<SentencePieceBpe> SentencePieceBpe::from_json(const nlohmann::json& j, const std::string& file,
                                                              std::int64_t bos_id, std::int64_t eos_id) {
  std::unique_ptr<SentencePieceBpe> t(new SentencePieceBpe());
  t->vocab_ = read_json_vocabulary(j, file);
  const auto& model = j["model"];
  const auto merges = read_json_merges(model, file);
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto a = t->vocab_.find(left), b = t->vocab_.find(right), merged = t->vocab_.find(left + right);
    check(a >= 0 && b >= 0 && merged >= 0, kPlace, "merge {} ('{} {}') names pieces missing from the vocabulary ({})",
          rank, left, right, file);
    t->merges_.emplace(pair_key(a, b), PairMerge{merged, -static_cast<double>(rank)});  // the first listed wins
  }
  t->byte_fallback_ = model.value("byte_fallback", false);
  t->fuse_unk_ = model.value("fuse_unk", false);
  if (model.contains("unk_token") && model["unk_token"].is_string())
    t->unk_ = t->vocab_.find(model["unk_token"].get<std::string>());
  for (int byte = 0; byte < 256; ++byte)
    t->byte_ids_[static_cast<std::size_t>(byte)] = t->vocab_.find(fmt::format("<0x{:02X}>", byte));
  if (t->byte_fallback_)
    for (int byte = 0; byte < 256; ++byte)
      check(t->byte_ids_[static_cast<std::size_t>(byte)] >= 0, kPlace,
            "byte_fallback is on but the vocabulary lacks <0x{:02X}> ({})", byte, file);

  for (const auto& step : steps_of(j.value("normalizer", nlohmann::json()), "normalizers")) {
    const std::string type = step.value("type", std::string());
    if (type == "Prepend") {
      t->normalizers_.push_back({NormalizerStep::Kind::prepend, "", step.value("prepend", std::string())});
    } else if (type == "Replace") {
      check(step.contains("pattern") && step["pattern"].contains("String"), kPlace,
            "only Replace normalisers with a String pattern are supported ({})", file);
      t->normalizers_.push_back({NormalizerStep::Kind::replace, step["pattern"]["String"].get<std::string>(),
                                 step.value("content", std::string())});
    } else if (const auto form = unicode_form(type)) {
      t->normalizers_.push_back({NormalizerStep::Kind::unicode, "", "", *form});
    } else {
      fail(kPlace, "normalizer '{}' is not supported for SentencePiece BPE; expected Prepend, Replace or NFC/NFKC ({})",
           type, file);
    }
  }
  for (const auto& step : steps_of(j.value("pre_tokenizer", nlohmann::json()), "pretokenizers")) {
    const std::string type = step.value("type", std::string());
    check(type == "Metaspace", kPlace, "pre-tokenizer '{}' is not supported for SentencePiece BPE; expected Metaspace ({})",
          type, file);
    t->metaspace_ = true;
    t->replacement_ = step.value("replacement", std::string("\u2581"));
    const std::string scheme =
        step.value("prepend_scheme", std::string(step.value("add_prefix_space", true) ? "always" : "never"));
    t->prepend_scheme_ = scheme == "first" ? PrependScheme::first
                         : scheme == "never" ? PrependScheme::never
                                             : PrependScheme::always;
    t->split_words_ = step.value("split", true);
  }
  for (int c = 0; c < 0x80; ++c) t->ascii_ids_[static_cast<std::size_t>(c)] = t->vocab_.find(std::string(1, static_cast<char>(c)));
  t->bos_ = bos_id >= 0 ? bos_id : t->vocab_.find("<s>");
  t->eos_ = eos_id >= 0 ? eos_id : t->vocab_.find("</s>");
  return t;
}

void SentencePieceBpe::encode_word(std::string_view word, std::vector<std::int64_t>& out) const {
  std::vector<std::int64_t> symbols;
  symbols.reserve(word.size());
  for (std::size_t i = 0; i < word.size();) {
    const auto lead = static_cast<unsigned char>(word[i]);
    const std::size_t n = std::min(utf8_length(lead), word.size() - i);
    const auto id = lead < 0x80 ? ascii_ids_[lead] : vocab_.find(std::string(word.substr(i, n)));
    if (id >= 0) {
      symbols.push_back(id);
    } else if (byte_fallback_) {
      for (std::size_t k = 0; k < n; ++k)
        symbols.push_back(byte_ids_[static_cast<unsigned char>(word[i + k])]);
    } else {
      check(unk_ >= 0, kPlace, "character '{}' is not in the vocabulary and there is no unk_token", word.substr(i, n));
      if (!(fuse_unk_ && !symbols.empty() && symbols.back() == unk_)) symbols.push_back(unk_);
    }
    i += n;
  }
  bpe_merge(symbols, [&](std::int64_t a, std::int64_t b) -> std::optional<PairMerge> {
    const auto it = merges_.find(pair_key(a, b));
    if (it == merges_.end()) return std::nullopt;
    return it->second;
  });
  out.insert(out.end(), symbols.begin(), symbols.end());
}

std::vector<std::int64_t> SentencePieceBpe::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<std::int64_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  split_on_added_tokens(
      text, vocab_.added,
      [&](std::string_view segment, std::size_t offset) {
        std::string s(segment);
        for (const auto& step : normalizers_) {
          if (step.kind == NormalizerStep::Kind::prepend) {
            if (!s.empty()) s = step.to + s;
          } else if (step.kind == NormalizerStep::Kind::replace) {
            s = replace_all(s, step.from, step.to);
          } else {
            s = normalize_unicode(s, step.form);
          }
        }
        if (metaspace_) {
          s = replace_all(s, " ", replacement_);
          const bool prepend = prepend_scheme_ == PrependScheme::always ||
                               (prepend_scheme_ == PrependScheme::first && offset == 0);
          if (prepend && !s.empty() && !s.starts_with(replacement_)) s = replacement_ + s;
          if (split_words_) {  // each word starts at a replacement character
            std::size_t start = 0;
            for (std::size_t at = s.find(replacement_, 1); at != std::string::npos; at = s.find(replacement_, at + 1)) {
              encode_word(std::string_view(s).substr(start, at - start), out);
              start = at;
            }
            encode_word(std::string_view(s).substr(start), out);
            return;
          }
        }
        encode_word(s, out);
      },
      [&](std::int64_t id) { out.push_back(id); });
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

std::string SentencePieceBpe::decode_piece(std::int64_t previous, std::int64_t token) const {
  check(token >= 0 && token < vocab_size(), kPlace, "token id {} is out of range [0, {})", token, vocab_size());
  const std::string& piece = vocab_.pieces[static_cast<std::size_t>(token)];
  if (vocab_.is_added[static_cast<std::size_t>(token)]) return piece;
  if (const auto byte = byte_fallback_value(piece)) return std::string(1, static_cast<char>(*byte));
  std::string text = replace_all(piece, replacement_, " ");
  // The space the normaliser put before the first word is not part of the text.
  if ((previous < 0 || previous == bos_) && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace loracpp::tokenizers
