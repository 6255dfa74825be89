#pragma once
// Chat templates: how a model expects a conversation to be spelled. A rendered conversation is a
// list of segments, each text (or BOS/EOS) and marked trained or not, so the loss can cover the
// assistant's turns only. The template is named (--chat-template) or recognised from the
// model's own Jinja chat_template; an unrecognised one is an error, never a silent fallback.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/records.h"

namespace loracpp::data {

struct Segment {
  enum class Kind { text, bos, eos };
  Kind kind = Kind::text;
  std::string text{};
  bool trained = false;  // part of the loss
};

#define LORACPP_CHAT_TEMPLATES(X) \
  X(chatml)                       \
  X(llama3)                       \
  X(llama2)                       \
  X(mistral)                      \
  X(alpaca)

enum class ChatTemplate {
#define LORACPP_ENUM(name) name,
  LORACPP_CHAT_TEMPLATES(LORACPP_ENUM)
#undef LORACPP_ENUM
};

std::string_view chat_template_name(ChatTemplate t);
// The names --chat-template accepts, comma-separated, for messages.
std::string known_chat_templates();
// Throws listing the known names.
ChatTemplate parse_chat_template(std::string_view name);
// Recognises a HuggingFace Jinja chat_template by its markers; nullopt when none matches.
std::optional<ChatTemplate> detect_chat_template(std::string_view jinja);
// The template to use: the named one, else the model's recognised one; throws when neither.
ChatTemplate choose_chat_template(std::string_view requested, std::string_view model_template,
                                  const std::string& model);

// The conversation as segments; assistant turns (with their end-of-turn marker) are trained.
std::vector<Segment> render_chat(ChatTemplate t, const std::vector<Message>& messages);

// Alpaca's prompt for an instruction with optional input, ending at "### Response:\n".
std::string alpaca_prompt(std::string_view instruction, std::string_view input);

}  // namespace loracpp::data
