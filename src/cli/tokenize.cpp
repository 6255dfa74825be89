// `lora tokenize`: text to ids (a JSON array on stdout), or ids back to text with --decode.
#include <fmt/core.h>

#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "models/registry.h"
#include "tokenizers/byte_level_bpe.h"
#include "tokenizers/llama2c_tokenizer.h"

namespace loracpp::cli {

namespace {
std::unique_ptr<tokenizers::Tokenizer> open_tokenizer(const std::filesystem::path& path) {
  if (path.filename() == "tokenizer.json") return tokenizers::load_tokenizer_json(path.parent_path());
  if (std::filesystem::is_directory(path) && !std::filesystem::exists(path / "config.json") &&
      std::filesystem::exists(path / "tokenizer.json"))
    return tokenizers::load_tokenizer_json(path);
  auto loaded = models::load_model(path);
  check(loaded.tokenizer != nullptr, "tokenize", "no tokenizer found for {}", path.string());
  return std::move(loaded.tokenizer);
}
}  // namespace

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
