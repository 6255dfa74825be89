#include "tokenizers/byte_level_bpe.h"
#include "io/json_file.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "core/error.h"

namespace loracpp::tokenizers {

namespace {

constexpr std::string_view kPlace = "tokenizer";
// GPT-2's pre-tokenisation, used by ByteLevel pre-tokenizers with use_regex.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string utf8(std::uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256 + n.
struct ByteAlphabet {
  std::array<std::string, 256> of_byte;
  std::unordered_map<std::string, unsigned char> to_byte;
  ByteAlphabet() {
    std::uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      of_byte[static_cast<std::size_t>(b)] = utf8(printable ? static_cast<std::uint32_t>(b) : next++);
      to_byte[of_byte[static_cast<std::size_t>(b)]] = static_cast<unsigned char>(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

std::size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
}

}  // namespace

struct ByteLevelBpe::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

ByteLevelBpe::~ByteLevelBpe() = default;

std::unique_ptr<ByteLevelBpe> ByteLevelBpe::from_json(const nlohmann::json& j, const std::string& file,
                                                      std::int64_t bos_id, std::int64_t eos_id) {
  check(j.is_object() && j.contains("model") && j["model"].is_object(), kPlace, "field 'model' is missing ({})", file);
  const auto& model = j["model"];
  check(model.value("type", std::string("BPE")) == "BPE", kPlace, "model type '{}' is not supported yet; expected BPE ({})",
        model.value("type", std::string()), file);
  check(model.contains("vocab") && model["vocab"].is_object(), kPlace, "field 'model.vocab' must be an object ({})", file);
  check(model.contains("merges") && model["merges"].is_array(), kPlace, "field 'model.merges' must be a list ({})", file);
  check(!model.value("byte_fallback", false), kPlace,
        "SentencePiece-style BPE with byte_fallback is not supported from tokenizer.json yet ({})", file);
  std::unique_ptr<ByteLevelBpe> t(new ByteLevelBpe());
  std::int64_t size = 0;
  for (const auto& [token, id] : model["vocab"].items()) {
    check(id.is_number_integer() && id.get<std::int64_t>() >= 0, kPlace, "vocab entry '{}' has id {} ({})", token,
          id.dump(), file);
    t->vocab_[token] = id.get<std::int64_t>();
    size = std::max(size, id.get<std::int64_t>() + 1);
  }
  std::int64_t rank = 0;
  for (const auto& merge : model["merges"]) {
    std::string key;
    if (merge.is_string()) {
      key = merge.get<std::string>();
    } else {
      check(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(), kPlace,
            "merge {} must be \"left right\" or [left, right] ({})", rank, file);
      key = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
    }
    t->merge_rank_.emplace(key, rank++);
  }
  t->ignore_merges_ = model.value("ignore_merges", false);
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      check(a.contains("id") && a.contains("content"), kPlace, "added_tokens entries need id and content ({})", file);
      const auto id = a["id"].get<std::int64_t>();
      t->added_.emplace_back(a["content"].get<std::string>(), id);
      t->vocab_[a["content"].get<std::string>()] = id;
      size = std::max(size, id + 1);
    }
  }
  std::sort(t->added_.begin(), t->added_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  t->pieces_.assign(static_cast<std::size_t>(size), std::string());
  t->special_.assign(static_cast<std::size_t>(size), false);
  for (const auto& [token, id] : t->vocab_) t->pieces_[static_cast<std::size_t>(id)] = token;
  for (const auto& [content, id] : t->added_) t->special_[static_cast<std::size_t>(id)] = true;

  // Normalizer: none, or Unicode normal forms (alone or in a Sequence).
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    std::vector<nlohmann::json> forms;
    const auto& n = j["normalizer"];
    if (n.value("type", std::string()) == "Sequence") {
      for (const auto& f : n["normalizers"]) forms.push_back(f);
    } else {
      forms.push_back(n);
    }
    for (const auto& f : forms) {
      const std::string type = f.value("type", std::string());
      if (type == "NFC") t->normalizers_.push_back(Normalization::nfc);
      else if (type == "NFKC") t->normalizers_.push_back(Normalization::nfkc);
      else if (type == "NFD") t->normalizers_.push_back(Normalization::nfd);
      else if (type == "NFKD") t->normalizers_.push_back(Normalization::nfkd);
      else fail(kPlace, "normalizer '{}' is not supported yet; expected NFC, NFKC, NFD or NFKD ({})", type, file);
    }
  }

  // Pre-tokenizer: ByteLevel (GPT-2's regex), or a Split regex followed by ByteLevel without one.
  std::string pattern = kGpt2Pattern;
  const nlohmann::json pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json();
  std::vector<nlohmann::json> steps;
  if (pre.is_object() && pre.value("type", std::string()) == "Sequence") {
    for (const auto& p : pre["pretokenizers"]) steps.push_back(p);
  } else if (pre.is_object()) {
    steps.push_back(pre);
  }
  bool byte_level = false;
  for (const auto& step : steps) {
    const std::string type = step.value("type", std::string());
    if (type == "Split") {
      check(step.contains("pattern") && step["pattern"].contains("Regex"), kPlace,
            "Split pre-tokenizers need a Regex pattern ({})", file);
      check(step.value("behavior", std::string("Isolated")) == "Isolated" && !step.value("invert", false), kPlace,
            "only Isolated, non-inverted Split pre-tokenizers are supported ({})", file);
      pattern = step["pattern"]["Regex"].get<std::string>();
    } else if (type == "ByteLevel") {
      byte_level = true;
      t->add_prefix_space_ = step.value("add_prefix_space", false);
    } else {
      fail(kPlace, "pre-tokenizer '{}' is not supported yet; expected ByteLevel or Split ({})", type, file);
    }
  }
  check(byte_level, kPlace, "only byte-level BPE tokenizers are supported from tokenizer.json yet ({})", file);
  t->regex_ = std::make_unique<Regex>();
  int error = 0;
  PCRE2_SIZE offset = 0;
  t->regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (!t->regex_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    fail(kPlace, "pre-tokenizer regex does not compile at offset {}: {} ({})", offset, reinterpret_cast<char*>(message), file);
  }
  pcre2_jit_compile(t->regex_->code, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
  t->bos_ = bos_id;
  t->eos_ = eos_id;
  return t;
}

void ByteLevelBpe::encode_piece(std::string_view bytes, std::vector<std::int64_t>& out) const {
  const std::string key(bytes);
  if (const auto hit = cache_.find(key); hit != cache_.end()) {
    out.insert(out.end(), hit->second.begin(), hit->second.end());
    return;
  }
  std::vector<std::string> symbols;
  std::string word;
  for (unsigned char b : bytes) {
    symbols.push_back(alphabet().of_byte[b]);
    word += symbols.back();
  }
  std::vector<std::int64_t> ids;
  if (const auto whole = vocab_.find(word); ignore_merges_ && whole != vocab_.end()) {
    ids.push_back(whole->second);
  } else {
    while (symbols.size() > 1) {
      std::int64_t best = std::numeric_limits<std::int64_t>::max();
      for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
        const auto it = merge_rank_.find(symbols[i] + " " + symbols[i + 1]);
        if (it != merge_rank_.end()) best = std::min(best, it->second);
      }
      if (best == std::numeric_limits<std::int64_t>::max()) break;
      // Merge every occurrence of the best pair, left to right.
      std::vector<std::string> merged;
      for (std::size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size()) {
          const auto it = merge_rank_.find(symbols[i] + " " + symbols[i + 1]);
          if (it != merge_rank_.end() && it->second == best) {
            merged.push_back(symbols[i] + symbols[i + 1]);
            ++i;
            continue;
          }
        }
        merged.push_back(symbols[i]);
      }
      symbols = std::move(merged);
    }
    for (const auto& s : symbols) {
      const auto it = vocab_.find(s);
      check(it != vocab_.end(), kPlace, "piece '{}' is not in the vocabulary", s);
      ids.push_back(it->second);
    }
  }
  if (cache_.size() < 200000) cache_.emplace(key, ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string ByteLevelBpe::normalize(std::string_view text) const {
  std::string current(text);
  for (const auto form : normalizers_) {
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2* normalizer = form == Normalization::nfc    ? unorm2_getNFCInstance(&status)
                                     : form == Normalization::nfkc ? unorm2_getNFKCInstance(&status)
                                     : form == Normalization::nfd  ? unorm2_getNFDInstance(&status)
                                                                   : unorm2_getNFKDInstance(&status);
    check(U_SUCCESS(status), kPlace, "ICU normaliser unavailable: {}", u_errorName(status));
    // UTF-8 -> UTF-16; text that is not valid UTF-8 is left as it is (byte-level BPE takes any bytes).
    std::int32_t length16 = 0;
    u_strFromUTF8(nullptr, 0, &length16, current.data(), static_cast<std::int32_t>(current.size()), &status);
    if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status)) return current;
    status = U_ZERO_ERROR;
    std::vector<UChar> utf16(static_cast<std::size_t>(length16) + 1);
    u_strFromUTF8(utf16.data(), length16 + 1, nullptr, current.data(), static_cast<std::int32_t>(current.size()), &status);
    if (U_FAILURE(status)) return current;
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
    current = std::move(out);
  }
  return current;
}

std::vector<std::int64_t> ByteLevelBpe::encode(std::string_view original, bool add_bos, bool add_eos) const {
  const std::string normalized = normalizers_.empty() ? std::string() : normalize(original);
  std::string_view text = normalizers_.empty() ? original : std::string_view(normalized);
  std::vector<std::int64_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  std::string prefixed;
  if (add_prefix_space_ && !text.empty() && text[0] != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  auto pretokenize = [&](std::string_view segment) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(segment.data());
    std::size_t pos = 0;
    while (pos < segment.size()) {
      const int rc = pcre2_match(regex_->code, subject, segment.size(), pos, 0, match, nullptr);
      std::size_t start = segment.size(), end = segment.size();
      if (rc > 0) {
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
        start = ov[0];
        end = ov[1];
      }
      if (start > pos) encode_piece(segment.substr(pos, start - pos), out);  // bytes no pattern matched (invalid UTF-8)
      if (end > start) {
        encode_piece(segment.substr(start, end - start), out);
        pos = end;
      } else if (rc > 0) {  // an empty match: step over one character
        const std::size_t step = std::min(utf8_length(static_cast<unsigned char>(segment[start])), segment.size() - start);
        encode_piece(segment.substr(start, step), out);
        pos = start + step;
      } else {
        pos = segment.size();
      }
    }
  };
  // Added tokens are matched verbatim first; the text between them is pre-tokenised.
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t best_at = text.size();
    const std::pair<std::string, std::int64_t>* best = nullptr;
    for (const auto& added : added_) {
      const auto at = text.find(added.first, pos);
      if (at < best_at) {
        best_at = at;
        best = &added;
      }
    }
    pretokenize(text.substr(pos, best_at - pos));
    if (!best) break;
    out.push_back(best->second);
    pos = best_at + best->first.size();
  }
  pcre2_match_data_free(match);
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

std::string ByteLevelBpe::decode_piece(std::int64_t /*previous*/, std::int64_t token) const {
  check(token >= 0 && token < vocab_size(), kPlace, "token id {} is out of range [0, {})", token, vocab_size());
  const std::string& piece = pieces_[static_cast<std::size_t>(token)];
  if (special_[static_cast<std::size_t>(token)]) return piece;
  std::string bytes;
  for (std::size_t i = 0; i < piece.size();) {
    const std::size_t n = std::min(utf8_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    const auto it = alphabet().to_byte.find(piece.substr(i, n));
    bytes += it != alphabet().to_byte.end() ? static_cast<char>(it->second) : '?';
    i += n;
  }
  return bytes;
}

namespace {
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
}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& folder) {
  const auto path = folder / "tokenizer.json";
  const nlohmann::json json = io::read_json_file(path, kPlace);
  nlohmann::json config;
  std::int64_t bos = -1, eos = -1;
  const auto config_path = folder / "tokenizer_config.json";
  auto id_of = [&](const nlohmann::json& token) -> std::int64_t {
    const std::string text = token.is_object() ? token.value("content", std::string()) : token.is_string() ? token.get<std::string>() : "";
    if (text.empty()) return -1;
    if (json["model"].contains("vocab") && json["model"]["vocab"].contains(text)) return json["model"]["vocab"][text].get<std::int64_t>();
    for (const auto& a : json.value("added_tokens", nlohmann::json::array()))
      if (a.value("content", std::string()) == text) return a["id"].get<std::int64_t>();
    return -1;
  };
  if (std::filesystem::exists(config_path)) {
    config = io::read_json_file(config_path, kPlace);
    if (config.contains("bos_token")) bos = id_of(config["bos_token"]);
    if (config.contains("eos_token")) eos = id_of(config["eos_token"]);
  }
  auto tokenizer = ByteLevelBpe::from_json(json, path.string(), bos, eos);
  tokenizer->set_chat_template(chat_template_of(config));
  return tokenizer;
}

}  // namespace loracpp::tokenizers
