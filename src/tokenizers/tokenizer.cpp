#include "tokenizers/tokenizer.h"

namespace loracpp::tokenizers {

std::string Tokenizer::decode(const std::vector<std::int64_t>& ids) const {
  std::string text;
  std::int64_t previous = bos_id();
  for (const auto id : ids) {
    if (id != bos_id() && id != eos_id()) text += decode_piece(previous, id);  // BOS and EOS are not text
    previous = id;
  }
  return text;
}

}  // namespace loracpp::tokenizers
