#include "tokenizers/byte_level_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "tokenizers/bpe_merge.h"

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
  auto vocabulary = read_json_vocabulary(j, file);
  const auto& model = j["model"];
  check(model.value("type", std::string("BPE")) == "BPE", kPlace, "model type '{}' is not supported here; expected BPE ({})",
        model.value("type", std::string()), file);
  std::unique_ptr<ByteLevelBpe> t(new ByteLevelBpe());
  const auto merges = read_json_merges(model, file);
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto a = vocabulary.find(left), b = vocabulary.find(right), merged = vocabulary.find(left + right);
    check(a >= 0 && b >= 0 && merged >= 0, kPlace, "merge {} ('{} {}') names pieces missing from the vocabulary ({})",
          rank, left, right, file);
    t->merges_.emplace(pair_key(a, b), PairMerge{merged, -static_cast<double>(rank)});
  }
  for (int byte = 0; byte < 256; ++byte) {
    const auto id = vocabulary.find(alphabet().of_byte[static_cast<std::size_t>(byte)]);
    check(id >= 0, kPlace, "byte {} has no piece in the vocabulary; not a byte-level BPE ({})", byte, file);
    t->byte_ids_[static_cast<std::size_t>(byte)] = id;
  }
  t->ignore_merges_ = model.value("ignore_merges", false);
  t->vocab_ = std::move(vocabulary);

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
      const auto form = unicode_form(type);
      check(form.has_value(), kPlace, "normalizer '{}' is not supported for byte-level BPE; expected NFC, NFKC, NFD or NFKD ({})",
            type, file);
      t->normalizers_.push_back(*form);
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
  std::vector<std::int64_t> ids;
  if (ignore_merges_) {  // a word that is itself a piece is not merged up from its bytes
    std::string word;
    for (unsigned char b : bytes) word += alphabet().of_byte[b];
    if (const auto whole = vocab_.find(word); whole >= 0) ids.push_back(whole);
  }
  if (ids.empty()) {
    for (unsigned char b : bytes) ids.push_back(byte_ids_[b]);
    bpe_merge(ids, [&](std::int64_t a, std::int64_t b) -> std::optional<PairMerge> {
      const auto it = merges_.find(pair_key(a, b));
      if (it == merges_.end()) return std::nullopt;
      return it->second;
    });
  }
  if (cache_.size() < 200000) cache_.emplace(key, ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<std::int64_t> ByteLevelBpe::encode(std::string_view original, bool add_bos, bool add_eos) const {
  std::string normalized;
  if (!normalizers_.empty()) {
    normalized = original;
    for (const auto form : normalizers_) normalized = normalize_unicode(normalized, form);
  }
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
  split_on_added_tokens(
      text, vocab_.added, [&](std::string_view segment, std::size_t) { pretokenize(segment); },
      [&](std::int64_t id) { out.push_back(id); });
  pcre2_match_data_free(match);
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

std::string ByteLevelBpe::decode_piece(std::int64_t /*previous*/, std::int64_t token) const {
  check(token >= 0 && token < vocab_size(), kPlace, "token id {} is out of range [0, {})", token, vocab_size());
  const std::string& piece = vocab_.pieces[static_cast<std::size_t>(token)];
  if (vocab_.is_added[static_cast<std::size_t>(token)]) return piece;
  std::string bytes;
  for (std::size_t i = 0; i < piece.size();) {
    const std::size_t n = std::min(utf8_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    const auto it = alphabet().to_byte.find(piece.substr(i, n));
    bytes += it != alphabet().to_byte.end() ? static_cast<char>(it->second) : '?';
    i += n;
  }
  return bytes;
}

}  // namespace loracpp::tokenizers
