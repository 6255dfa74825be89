// `lora tokenize`: text to ids (a JSON array on stdout), or ids back to text with --decode.
#include <fmt/core.h>

#include <fstream>
#include <sstream>

#include "cli/commands.h"

namespace loracpp::cli {


void TokenizeCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("tokenize", "Text to token ids (JSON array), or back with --decode");
  app->add_option("--model,-m", model, "A model (its tokenizer is used), a tokenizer.json or its folder")->required();
  auto* text_option = app->add_option("--text,-t", text, "The text (or, with --decode, a JSON array of ids)");
  app->add_option("--file,-f", file, "Read the text from a file")->excludes(text_option);
  app->add_flag("--decode", decode, "Turn ids into text");
}

int TokenizeCommand::run() {
  const auto tokenizer = open_tokenizer(model);
  std::string input = text;
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    check(in.good(), "tokenize", "cannot read {}", file);
    std::stringstream buffer;
    buffer << in.rdbuf();
    input = buffer.str();
  }
  if (decode) {
    nlohmann::json ids;
    try {
      ids = nlohmann::json::parse(input);
    } catch (const nlohmann::json::exception& e) {
      fail("tokenize", "--decode expects a JSON array of token ids: {}", e.what());
    }
    check(ids.is_array(), "tokenize", "--decode expects a JSON array of token ids");
    std::vector<std::int64_t> values;
    for (const auto& id : ids) {
      check(id.is_number_integer(), "tokenize", "--decode expects integers, got {}", id.dump());
      values.push_back(id.get<std::int64_t>());
    }
    const std::string out = tokenizer->decode(values);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    fmt::print("{}\n", nlohmann::json(tokenizer->encode(input, false, false)).dump());
  }
  return 0;
}

}  // namespace loracpp::cli
