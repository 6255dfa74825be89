#include "tokenizers/tokenizer.h"

namespace loracpp::tokenizers {

std::string Tokenizer::decode(const std::vector<std::int64_t>& ids) const {
  std::string text;
  for (std::size_t i = 0; i < ids.size(); ++i) text += decode_piece(i ? ids[i - 1] : bos_id(), ids[i]);
  return text;
}

}  // namespace loracpp::tokenizers
