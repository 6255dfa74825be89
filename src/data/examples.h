#pragma once
// From records to token ids with a loss mask. Each record becomes segments (text or BOS/EOS,
// trained or not), following its format: plain text is trained whole; a prompt, an Alpaca
// instruction, a user turn or a text to classify is context, and only the completion, the
// response, the assistant turn or the label is trained (unless train_on_prompt).
#include <optional>
#include <vector>

#include "data/chat_template.h"
#include "data/records.h"
#include "tokenizers/tokenizer.h"

namespace loracpp::data {

struct ExampleOptions {
  std::optional<ChatTemplate> chat_template{};  // required for chat records
  bool train_on_prompt = false;                 // train on every token, prompts included
};

std::vector<Segment> record_segments(const Record& record, RecordFormat format, const ExampleOptions& options);

struct TokenizedExample {
  std::vector<std::int64_t> ids;
  std::vector<std::uint8_t> trained;  // per id: 1 where the model learns to predict it
};

// Runs of text between BOS/EOS are encoded as one string, as the model's own tokenizer would see
// the rendered conversation; the trained/untrained boundaries inside a run are placed at the
// token count of the encoded prefix up to each boundary.
TokenizedExample tokenize_segments(const std::vector<Segment>& segments, const tokenizers::Tokenizer& tokenizer);

std::vector<TokenizedExample> tokenize_records(const std::vector<Record>& records, RecordFormat format,
                                              const tokenizers::Tokenizer& tokenizer, const ExampleOptions& options);

// The label-prompt spelling of labelled text: "TEXT\nLabel:" then " LABEL" (trained).
inline constexpr std::string_view kLabelPrompt = "\nLabel:";

}  // namespace loracpp::data
