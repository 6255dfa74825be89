#include "data/chat_template.h"

#include <fmt/format.h>

#include "core/error.h"

namespace loracpp::data {

namespace {

constexpr std::string_view kPlace = "chat-template";
constexpr ChatTemplate kAll[] = {
#define LORACPP_VALUE(name) ChatTemplate::name,
    LORACPP_CHAT_TEMPLATES(LORACPP_VALUE)
#undef LORACPP_VALUE
};
constexpr std::string_view kAlpacaPreamble =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
constexpr std::string_view kAlpacaInputPreamble =
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.";

std::string strip(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return std::string(s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1));
}

class Builder {
 public:
  void bos() { out_.push_back({.kind = Segment::Kind::bos}); }
  void eos(bool trained) { out_.push_back({.kind = Segment::Kind::eos, .trained = trained}); }
  void text(std::string s, bool trained = false) {
    if (s.empty()) return;
    if (!out_.empty() && out_.back().kind == Segment::Kind::text && out_.back().trained == trained) {
      out_.back().text += s;  // adjacent text of the same kind is one segment
    } else {
      out_.push_back({.kind = Segment::Kind::text, .text = std::move(s), .trained = trained});
    }
  }
  std::vector<Segment> take() { return std::move(out_); }

 private:
  std::vector<Segment> out_;
};

// Llama 2, Mistral and Alpaca have no place for a system message other than the start: it is
// folded into the first user turn (Llama 2's <<SYS>> block, Mistral's first [INST], Alpaca's
// preamble).
std::pair<std::string, std::size_t> leading_system(ChatTemplate t, const std::vector<Message>& messages) {
  std::string system;
  std::size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  for (std::size_t i = first; i < messages.size(); ++i)
    check(messages[i].role != "system", kPlace, "the {} template takes a system message only as the first message",
          chat_template_name(t));
  return {system, first};
}

}  // namespace

std::string_view chat_template_name(ChatTemplate t) {
  switch (t) {
#define LORACPP_NAME(name) \
  case ChatTemplate::name: return #name;
    LORACPP_CHAT_TEMPLATES(LORACPP_NAME)
#undef LORACPP_NAME
  }
  return "?";
}

std::string known_chat_templates() {
  std::vector<std::string_view> names;
  for (auto t : kAll) names.push_back(chat_template_name(t));
  return fmt::format("{}", fmt::join(names, ", "));
}

ChatTemplate parse_chat_template(std::string_view name) {
  for (auto t : kAll)
    if (chat_template_name(t) == name) return t;
  fail(kPlace, "unknown chat template '{}'; known: {}", name, known_chat_templates());
}

std::optional<ChatTemplate> detect_chat_template(std::string_view jinja) {
  auto has = [&](std::string_view marker) { return jinja.find(marker) != std::string_view::npos; };
  if (has("<|start_header_id|>") && has("<|eot_id|>")) return ChatTemplate::llama3;
  if (has("<|im_start|>") && has("<|im_end|>")) return ChatTemplate::chatml;
  if (has("[INST]") && has("<<SYS>>")) return ChatTemplate::llama2;
  if (has("[INST]")) return ChatTemplate::mistral;
  if (has("### Instruction") && has("### Response")) return ChatTemplate::alpaca;
  return std::nullopt;
}

ChatTemplate choose_chat_template(std::string_view requested, std::string_view model_template,
                                  const std::string& model) {
  if (!requested.empty()) return parse_chat_template(requested);
  check(!model_template.empty(), kPlace, "{} has no chat template; name one with --chat-template (known: {})", model,
        known_chat_templates());
  const auto detected = detect_chat_template(model_template);
  check(detected.has_value(), kPlace,
        "the chat template of {} is not one we recognise; name one with --chat-template (known: {})", model,
        known_chat_templates());
  return *detected;
}

std::string alpaca_prompt(std::string_view instruction, std::string_view input) {
  if (input.empty()) return fmt::format("{}\n\n### Instruction:\n{}\n\n### Response:\n", kAlpacaPreamble, instruction);
  return fmt::format("{}\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Response:\n", kAlpacaInputPreamble,
                     instruction, input);
}

std::vector<Segment> render_chat(ChatTemplate t, const std::vector<Message>& messages) {
  check(!messages.empty(), kPlace, "a conversation needs at least one message");
  Builder b;
  switch (t) {
    case ChatTemplate::chatml:
      for (const auto& m : messages) {
        b.text(fmt::format("<|im_start|>{}\n", m.role));
        const bool trained = m.role == "assistant";
        b.text(m.content + "<|im_end|>", trained);
        b.text("\n");
      }
      break;
    case ChatTemplate::llama3:
      b.bos();
      for (const auto& m : messages) {
        b.text(fmt::format("<|start_header_id|>{}<|end_header_id|>\n\n", m.role));
        b.text(strip(m.content) + "<|eot_id|>", m.role == "assistant");
      }
      break;
    case ChatTemplate::llama2: {
      auto [system, first] = leading_system(t, messages);
      bool first_user = true;
      for (std::size_t i = first; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (m.role == "user") {
          b.bos();
          std::string content = strip(m.content);
          if (first_user && !system.empty()) content = fmt::format("<<SYS>>\n{}\n<</SYS>>\n\n{}", strip(system), content);
          b.text(fmt::format("[INST] {} [/INST]", content));
          first_user = false;
        } else {
          b.text(fmt::format(" {} ", strip(m.content)), true);
          b.eos(true);
        }
      }
      break;
    }
    case ChatTemplate::mistral: {
      auto [system, first] = leading_system(t, messages);
      b.bos();
      bool first_user = true;
      for (std::size_t i = first; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (m.role == "user") {
          const std::string content = first_user && !system.empty() ? system + "\n\n" + m.content : m.content;
          b.text(fmt::format("[INST] {} [/INST]", content));
          first_user = false;
        } else {
          b.text(m.content, true);
          b.eos(true);
        }
      }
      break;
    }
    case ChatTemplate::alpaca: {
      auto [system, first] = leading_system(t, messages);
      b.bos();
      b.text(fmt::format("{}\n\n", system.empty() ? std::string(kAlpacaPreamble) : system));
      for (std::size_t i = first; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (m.role == "user") {
          b.text(fmt::format("### Instruction:\n{}\n\n### Response:\n", m.content));
        } else {
          b.text(m.content, true);
          b.eos(true);
          b.text("\n\n");
        }
      }
      break;
    }
  }
  auto segments = b.take();
  while (!segments.empty() && segments.back().kind == Segment::Kind::text && !segments.back().trained)
    segments.pop_back();  // nothing after the last trained token matters for training
  return segments;
}

}  // namespace loracpp::data
