#include "data/examples.h"

#include <algorithm>

#include "core/error.h"

namespace loracpp::data {

std::vector<Segment> record_segments(const Record& r, RecordFormat format, const ExampleOptions& options) {
  using Kind = Segment::Kind;
  std::vector<Segment> s;
  switch (format) {
    case RecordFormat::text:
      s = {{Kind::bos, "", true}, {Kind::text, r.text, true}, {Kind::eos, "", true}};
      break;
    case RecordFormat::prompt_completion:
      s = {{Kind::bos}, {Kind::text, r.prompt}, {Kind::text, r.completion, true}, {Kind::eos, "", true}};
      break;
    case RecordFormat::alpaca:
      s = {{Kind::bos}, {Kind::text, alpaca_prompt(r.instruction, r.input)}, {Kind::text, r.output, true},
           {Kind::eos, "", true}};
      break;
    case RecordFormat::labelled:
      s = {{Kind::bos}, {Kind::text, r.text + std::string(kLabelPrompt)}, {Kind::text, " " + r.label, true},
           {Kind::eos, "", true}};
      break;
    case RecordFormat::chat:
      check(options.chat_template.has_value(), "data", "chat records need a chat template (known: {})",
            known_chat_templates());
      s = render_chat(*options.chat_template, r.messages);
      break;
  }
  if (options.train_on_prompt)
    for (auto& seg : s) seg.trained = true;
  return s;
}

TokenizedExample tokenize_segments(const std::vector<Segment>& segments, const tokenizers::Tokenizer& tokenizer) {
  TokenizedExample out;
  auto emit = [&](std::int64_t id, bool trained) {
    out.ids.push_back(id);
    out.trained.push_back(trained ? 1 : 0);
  };
  for (std::size_t i = 0; i < segments.size();) {
    const auto& seg = segments[i];
    if (seg.kind != Segment::Kind::text) {
      const std::int64_t id = seg.kind == Segment::Kind::bos ? tokenizer.bos_id() : tokenizer.eos_id();
      if (id >= 0) emit(id, seg.trained);  // tokenizers without BOS (Qwen) leave it out
      ++i;
      continue;
    }
    std::size_t end = i;
    std::string text;
    std::vector<std::size_t> boundaries;  // text length at the end of each segment of the run
    bool mixed = false;
    for (; end < segments.size() && segments[end].kind == Segment::Kind::text; ++end) {
      text += segments[end].text;
      boundaries.push_back(text.size());
      mixed |= segments[end].trained != seg.trained;
    }
    const auto ids = tokenizer.encode(text, false, false);
    std::vector<std::size_t> token_ends(boundaries.size(), ids.size());
    if (mixed) {
      std::size_t previous = 0;
      for (std::size_t k = 0; k + 1 < boundaries.size(); ++k) {
        const auto n = tokenizer.encode(std::string_view(text).substr(0, boundaries[k]), false, false).size();
        previous = std::clamp(n, previous, ids.size());
        token_ends[k] = previous;
      }
    }
    std::size_t k = 0;
    for (std::size_t t = 0; t < ids.size(); ++t) {
      while (t >= token_ends[k]) ++k;
      emit(ids[t], segments[i + k].trained);
    }
    i = end;
  }
  return out;
}

std::vector<TokenizedExample> tokenize_records(const std::vector<Record>& records, RecordFormat format,
                                              const tokenizers::Tokenizer& tokenizer, const ExampleOptions& options) {
  std::vector<TokenizedExample> out;
  out.reserve(records.size());
  for (const auto& r : records) out.push_back(tokenize_segments(record_segments(r, format, options), tokenizer));
  return out;
}

}  // namespace loracpp::data
