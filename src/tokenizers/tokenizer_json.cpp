#include "tokenizers/tokenizer_json.h"

#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "io/json_file.h"
#include "tokenizers/byte_level_bpe.h"
#include "tokenizers/sentencepiece_bpe.h"
#include "tokenizers/wordpiece.h"

namespace loracpp::tokenizers {

namespace {

constexpr std::string_view kPlace = "tokenizer";

// tokenizer_config.json's chat_template: one string, or a list of named templates ("default").
std::string chat_template_of(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("chat_template")) return {};
  const auto& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const auto& named : t)
      if (named.is_object() && named.value("name", std::string()) == "default" && named.contains("template") &&
          named["template"].is_string())
        return named["template"].get<std::string>();
  return {};
}

// SentencePiece-style BPE spells spaces as U+2581 (a Metaspace pre-tokenizer, or Prepend/Replace
// normalisers) and falls back to <0xXX> byte pieces; byte-level BPE does neither.
bool is_sentencepiece_style(const nlohmann::json& j) {
  if (j["model"].value("byte_fallback", false)) return true;
  const std::string dumped = (j.contains("pre_tokenizer") ? j["pre_tokenizer"].dump() : "") +
                             (j.contains("normalizer") ? j["normalizer"].dump() : "");
  return dumped.find("Metaspace") != std::string::npos || dumped.find("\"Prepend\"") != std::string::npos;
}

}  // namespace

JsonVocabulary read_json_vocabulary(const nlohmann::json& j, const std::string& file) {
  check(j.is_object() && j.contains("model") && j["model"].is_object(), kPlace, "field 'model' is missing ({})", file);
  const auto& model = j["model"];
  check(model.contains("vocab") && model["vocab"].is_object(), kPlace, "field 'model.vocab' must be an object ({})",
        file);
  JsonVocabulary v;
  std::int64_t size = 0;
  for (const auto& [piece, id] : model["vocab"].items()) {
    check(id.is_number_integer() && id.get<std::int64_t>() >= 0, kPlace, "vocab entry '{}' has id {} ({})", piece,
          id.dump(), file);
    v.ids[piece] = id.get<std::int64_t>();
    size = std::max(size, id.get<std::int64_t>() + 1);
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      check(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                a["content"].is_string(),
            kPlace, "added_tokens entries need an integer 'id' and a string 'content' ({})", file);
      AddedToken token{a["content"].get<std::string>(), a["id"].get<std::int64_t>(), a.value("special", false)};
      check(token.id >= 0 && !token.content.empty(), kPlace, "added token '{}' has id {} ({})", token.content, token.id,
            file);
      v.ids[token.content] = token.id;
      size = std::max(size, token.id + 1);
      v.added.push_back(std::move(token));
    }
  }
  std::stable_sort(v.added.begin(), v.added.end(),
                   [](const auto& a, const auto& b) { return a.content.size() > b.content.size(); });
  v.pieces.assign(static_cast<std::size_t>(size), std::string());
  v.is_added.assign(static_cast<std::size_t>(size), false);
  for (const auto& [piece, id] : v.ids) v.pieces[static_cast<std::size_t>(id)] = piece;
  for (const auto& a : v.added) v.is_added[static_cast<std::size_t>(a.id)] = true;
  return v;
}

std::vector<std::pair<std::string, std::string>> read_json_merges(const nlohmann::json& model, const std::string& file) {
  check(model.contains("merges") && model["merges"].is_array(), kPlace, "field 'model.merges' must be a list ({})",
        file);
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& merge : model["merges"]) {
    if (merge.is_string()) {
      const auto text = merge.get<std::string>();
      const auto space = text.find(' ', 1);  // a merge's left side is never empty
      check(space != std::string::npos, kPlace, "merge {} ('{}') must be \"left right\" ({})", merges.size(), text,
            file);
      merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else {
      check(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(), kPlace,
            "merge {} must be \"left right\" or [left, right] ({})", merges.size(), file);
      merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    }
  }
  return merges;
}

void split_on_added_tokens(std::string_view text, const std::vector<AddedToken>& added,
                           const std::function<void(std::string_view, std::size_t)>& on_text,
                           const std::function<void(std::int64_t)>& on_added) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t best_at = text.size();
    const AddedToken* best = nullptr;
    for (const auto& a : added) {  // longest first: of tokens starting at one place, the longest wins
      const auto at = text.find(a.content, pos);
      if (at < best_at) {
        best_at = at;
        best = &a;
      }
    }
    if (best_at > pos) on_text(text.substr(pos, best_at - pos), pos);
    if (!best) break;
    on_added(best->id);
    pos = best_at + best->content.size();
  }
}

std::optional<UnicodeForm> unicode_form(std::string_view type) {
  if (type == "NFC") return UnicodeForm::nfc;
  if (type == "NFKC") return UnicodeForm::nfkc;
  if (type == "NFD") return UnicodeForm::nfd;
  if (type == "NFKD") return UnicodeForm::nfkd;
  return std::nullopt;
}

std::string normalize_unicode(std::string_view text, UnicodeForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* normalizer = form == UnicodeForm::nfc    ? unorm2_getNFCInstance(&status)
                                   : form == UnicodeForm::nfkc ? unorm2_getNFKCInstance(&status)
                                   : form == UnicodeForm::nfd  ? unorm2_getNFDInstance(&status)
                                                               : unorm2_getNFKDInstance(&status);
  check(U_SUCCESS(status), kPlace, "ICU normaliser unavailable: {}", u_errorName(status));
  std::int32_t length16 = 0;
  u_strFromUTF8(nullptr, 0, &length16, text.data(), static_cast<std::int32_t>(text.size()), &status);
  if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::vector<UChar> utf16(static_cast<std::size_t>(length16) + 1);
  u_strFromUTF8(utf16.data(), length16 + 1, nullptr, text.data(), static_cast<std::int32_t>(text.size()), &status);
  if (U_FAILURE(status)) return std::string(text);
  std::vector<UChar> normalized(static_cast<std::size_t>(length16) * 4 + 16);
  const std::int32_t n = unorm2_normalize(normalizer, utf16.data(), length16, normalized.data(),
                                          static_cast<std::int32_t>(normalized.size()), &status);
  check(U_SUCCESS(status), kPlace, "normalisation failed: {}", u_errorName(status));
  std::int32_t length8 = 0;
  u_strToUTF8(nullptr, 0, &length8, normalized.data(), n, &status);
  status = U_ZERO_ERROR;
  std::string out(static_cast<std::size_t>(length8), '\0');
  u_strToUTF8(out.data(), length8, nullptr, normalized.data(), n, &status);
  check(U_SUCCESS(status) || status == U_STRING_NOT_TERMINATED_WARNING, kPlace, "normalisation failed: {}",
        u_errorName(status));
  return out;
}

std::optional<unsigned char> byte_fallback_value(std::string_view piece) {
  unsigned int byte = 0;
  char tail = 0;
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" &&
      std::sscanf(std::string(piece).c_str(), "<0x%2X%c", &byte, &tail) == 2 && tail == '>')
    return static_cast<unsigned char>(byte);
  return std::nullopt;
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& folder) {
  const auto path = folder / "tokenizer.json";
  const nlohmann::json json = io::read_json_file(path, kPlace);
  check(json.is_object() && json.contains("model") && json["model"].is_object(), kPlace,
        "field 'model' is missing ({})", path.string());
  nlohmann::json config;
  if (const auto config_path = folder / "tokenizer_config.json"; std::filesystem::exists(config_path))
    config = io::read_json_file(config_path, kPlace);
  // BOS/EOS: tokenizer_config.json names them (a string, or an object with 'content').
  auto id_of = [&](const char* key) -> std::int64_t {
    if (!config.is_object() || !config.contains(key)) return -1;
    const auto& token = config[key];
    const std::string text = token.is_object() ? token.value("content", std::string())
                             : token.is_string() ? token.get<std::string>()
                                                 : "";
    if (text.empty()) return -1;
    if (json["model"].contains("vocab") && json["model"]["vocab"].is_object() && json["model"]["vocab"].contains(text))
      return json["model"]["vocab"][text].get<std::int64_t>();
    for (const auto& a : json.value("added_tokens", nlohmann::json::array()))
      if (a.value("content", std::string()) == text) return a["id"].get<std::int64_t>();
    return -1;
  };
  const std::string type = json["model"].value("type", std::string("BPE"));
  std::unique_ptr<Tokenizer> tokenizer;
  if (type == "WordPiece") {
    tokenizer = WordPiece::from_json(json, path.string());
  } else if (type == "BPE" && is_sentencepiece_style(json)) {
    tokenizer = SentencePieceBpe::from_json(json, path.string(), id_of("bos_token"), id_of("eos_token"));
  } else if (type == "BPE") {
    tokenizer = ByteLevelBpe::from_json(json, path.string(), id_of("bos_token"), id_of("eos_token"));
  } else {
    fail(kPlace, "model type '{}' is not supported; expected BPE or WordPiece ({})", type, path.string());
  }
  tokenizer->set_chat_template(chat_template_of(config));
  return tokenizer;
}

}  // namespace loracpp::tokenizers
