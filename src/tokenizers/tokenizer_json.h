#pragma once
// What the tokenizer.json models share: the vocabulary with its added tokens, BPE merges,
// splitting text around added tokens, Unicode normal forms (through ICU), and the loader that
// picks the model: byte-level BPE, SentencePiece-style BPE (byte fallback) or WordPiece.
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizers/tokenizer.h"

namespace loracpp::tokenizers {

struct AddedToken {
  std::string content;
  std::int64_t id = 0;
  bool special = false;
};

struct JsonVocabulary {
  std::unordered_map<std::string, std::int64_t> ids;  // piece -> id, added tokens included
  std::vector<std::string> pieces;                     // id -> piece
  std::vector<AddedToken> added;                       // longest content first
  std::vector<bool> is_added;                          // id -> whether it is an added token
  std::int64_t find(const std::string& piece) const {
    const auto it = ids.find(piece);
    return it == ids.end() ? -1 : it->second;
  }
};

// model.vocab (an object of piece -> id) and added_tokens; throws naming the file on bad entries.
JsonVocabulary read_json_vocabulary(const nlohmann::json& tokenizer, const std::string& file);
// model.merges as (left, right) in rank order: "left right" strings or [left, right] pairs.
std::vector<std::pair<std::string, std::string>> read_json_merges(const nlohmann::json& model, const std::string& file);

// Added tokens are matched verbatim before anything else: on_text gets the text between them
// (with its offset in text), on_added each added token's id.
void split_on_added_tokens(std::string_view text, const std::vector<AddedToken>& added,
                           const std::function<void(std::string_view, std::size_t)>& on_text,
                           const std::function<void(std::int64_t)>& on_added);

enum class UnicodeForm { nfc, nfkc, nfd, nfkd };
// "NFC", "NFKC", "NFD", "NFKD" -> the form; anything else -> nullopt.
std::optional<UnicodeForm> unicode_form(std::string_view type);
// Text that is not valid UTF-8 comes back unchanged.
std::string normalize_unicode(std::string_view text, UnicodeForm form);

// The bytes of a <0xXX> byte-fallback piece, or nullopt.
std::optional<unsigned char> byte_fallback_value(std::string_view piece);

// Loads tokenizer.json (+ tokenizer_config.json for BOS/EOS and the chat template) from a
// HuggingFace folder; refuses model types we do not read, naming them.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& folder);

}  // namespace loracpp::tokenizers
