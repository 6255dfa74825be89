#include "tokenizers/wordpiece.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include "core/error.h"

namespace loracpp::tokenizers {

namespace {

constexpr std::string_view kPlace = "tokenizer";

// Code points of the text; bytes that are not UTF-8 become U+FFFD.
std::vector<UChar32> code_points(std::string_view text) {
  std::vector<UChar32> out;
  const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
  const auto length = static_cast<std::int32_t>(text.size());
  for (std::int32_t i = 0; i < length;) {
    UChar32 c = 0;
    U8_NEXT(s, i, length, c);
    out.push_back(c < 0 ? 0xFFFD : c);
  }
  return out;
}

void append_utf8(std::string& out, UChar32 c) {
  char buffer[4];
  std::int32_t n = 0;
  U8_APPEND_UNSAFE(buffer, n, c);
  out.append(buffer, static_cast<std::size_t>(n));
}

bool is_whitespace(UChar32 c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || u_charType(c) == U_SPACE_SEPARATOR; }

bool is_control(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const auto type = u_charType(c);
  return type == U_CONTROL_CHAR || type == U_FORMAT_CHAR;
}

// BERT counts all non-alphanumeric ASCII as punctuation, and Unicode's P* categories.
bool is_punctuation(UChar32 c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  return u_ispunct(c) != 0;
}

// The CJK Unified Ideographs blocks BERT surrounds with spaces.
bool is_cjk(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

}  // namespace

std::unique_ptr<WordPiece> WordPiece::from_json(const nlohmann::json& j, const std::string& file) {
  std::unique_ptr<WordPiece> t(new WordPiece());
  t->vocab_ = read_json_vocabulary(j, file);
  const auto& model = j["model"];
  t->prefix_ = model.value("continuing_subword_prefix", std::string("##"));
  t->max_chars_ = model.value("max_input_chars_per_word", std::size_t{100});
  const std::string unk = model.value("unk_token", std::string("[UNK]"));
  t->unk_ = t->vocab_.find(unk);
  check(t->unk_ >= 0, kPlace, "unk_token '{}' is not in the vocabulary ({})", unk, file);
  t->cls_ = t->vocab_.find("[CLS]");
  t->sep_ = t->vocab_.find("[SEP]");
  const auto normalizer = j.value("normalizer", nlohmann::json());
  if (normalizer.is_object()) {
    check(normalizer.value("type", std::string()) == "BertNormalizer", kPlace,
          "normalizer '{}' is not supported for WordPiece; expected BertNormalizer ({})",
          normalizer.value("type", std::string()), file);
    t->clean_text_ = normalizer.value("clean_text", true);
    t->chinese_chars_ = normalizer.value("handle_chinese_chars", true);
    t->lowercase_ = normalizer.value("lowercase", true);
    // strip_accents null means: follow lowercase.
    t->strip_accents_ = normalizer.contains("strip_accents") && normalizer["strip_accents"].is_boolean()
                            ? normalizer["strip_accents"].get<bool>()
                            : t->lowercase_;
  }
  const auto pre = j.value("pre_tokenizer", nlohmann::json());
  check(!pre.is_object() || pre.value("type", std::string()) == "BertPreTokenizer", kPlace,
        "pre-tokenizer '{}' is not supported for WordPiece; expected BertPreTokenizer ({})",
        pre.is_object() ? pre.value("type", std::string()) : "", file);
  return t;
}

std::string WordPiece::normalize(std::string_view text) const {
  std::vector<UChar32> cps = code_points(text);
  if (strip_accents_) {  // decompose, then drop the combining marks
    std::string composed;
    for (auto c : cps) append_utf8(composed, c);
    cps = code_points(normalize_unicode(composed, UnicodeForm::nfd));
  }
  std::string out;
  for (auto c : cps) {
    if (clean_text_ && (c == 0 || c == 0xFFFD || is_control(c))) continue;
    if (strip_accents_ && u_charType(c) == U_NON_SPACING_MARK) continue;
    if (clean_text_ && is_whitespace(c)) c = ' ';
    if (lowercase_) c = u_tolower(c);
    if (chinese_chars_ && is_cjk(c)) {
      out += ' ';
      append_utf8(out, c);
      out += ' ';
    } else {
      append_utf8(out, c);
    }
  }
  return out;
}

void WordPiece::encode_word(std::string_view word, std::vector<std::int64_t>& out) const {
  const auto cps = code_points(word);
  if (cps.size() > max_chars_) {
    out.push_back(unk_);
    return;
  }
  std::vector<std::int64_t> pieces;
  std::size_t start = 0;
  while (start < word.size()) {
    // The longest vocabulary piece starting here (bytes of whole characters only).
    std::int64_t found = -1;
    std::size_t end = word.size();
    for (; end > start; --end) {
      if (end < word.size() && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) continue;
      const std::string candidate = (start > 0 ? prefix_ : std::string()) + std::string(word.substr(start, end - start));
      if ((found = vocab_.find(candidate)) >= 0) break;
    }
    if (found < 0) {  // one unmatched stretch makes the whole word unknown
      out.push_back(unk_);
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

std::vector<std::int64_t> WordPiece::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<std::int64_t> out;
  if (add_bos && cls_ >= 0) out.push_back(cls_);
  split_on_added_tokens(
      text, vocab_.added,
      [&](std::string_view segment, std::size_t) {
        const std::string normalized = normalize(segment);
        std::string word;
        auto flush = [&] {
          if (!word.empty()) encode_word(word, out);
          word.clear();
        };
        for (const auto c : code_points(normalized)) {
          if (is_whitespace(c)) {
            flush();
          } else if (is_punctuation(c)) {
            flush();
            append_utf8(word, c);
            flush();
          } else {
            append_utf8(word, c);
          }
        }
        flush();
      },
      [&](std::int64_t id) { out.push_back(id); });
  if (add_eos && sep_ >= 0) out.push_back(sep_);
  return out;
}

std::string WordPiece::decode_piece(std::int64_t previous, std::int64_t token) const {
  check(token >= 0 && token < vocab_size(), kPlace, "token id {} is out of range [0, {})", token, vocab_size());
  const std::string& piece = vocab_.pieces[static_cast<std::size_t>(token)];
  if (piece.starts_with(prefix_)) return piece.substr(prefix_.size());
  // Words are joined by spaces, except before . , ! ? (the WordPiece decoder's clean-up).
  const bool tight = piece == "." || piece == "," || piece == "!" || piece == "?";
  return previous < 0 || previous == cls_ || tight ? piece : " " + piece;
}

}  // namespace loracpp::tokenizers
