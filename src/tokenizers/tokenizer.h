#pragma once
// What generation and data loading need from any tokenizer.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loracpp::tokenizers {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<std::int64_t> encode(std::string_view text, bool add_bos, bool add_eos) const = 0;
  // The text of `token` when it follows `previous` (tokenizers drop a leading space after BOS).
  virtual std::string decode_piece(std::int64_t previous, std::int64_t token) const = 0;
  virtual std::int64_t vocab_size() const = 0;
  virtual std::int64_t bos_id() const = 0;
  virtual std::int64_t eos_id() const = 0;
  // The text of ids, BOS and EOS left out.
  std::string decode(const std::vector<std::int64_t>& ids) const;
  // The model's Jinja chat template (tokenizer_config.json, GGUF tokenizer.chat_template); empty
  // when it has none.
  const std::string& chat_template() const { return chat_template_; }
  void set_chat_template(std::string jinja) { chat_template_ = std::move(jinja); }

 private:
  std::string chat_template_;
};

}  // namespace loracpp::tokenizers
