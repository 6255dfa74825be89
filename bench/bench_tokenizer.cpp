// Tokenizer encoding speed on English text, one thread: MB/s of input. The text is the given file
// (default: the concatenated fortunes), encoded in 64 KB chunks after one warm-up pass.
//   bench_tokenizer TOKENIZER_JSON_FOLDER_OR_MODEL [TEXT_FILE]
#include <chrono>
#include <fmt/core.h>
#include <fstream>
#include <sstream>

#include "backend/threads.h"
#include "models/registry.h"
#include "tokenizers/tokenizer_json.h"

using namespace loracpp;

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: {} TOKENIZER_FOLDER_OR_MODEL [TEXT_FILE]\n", argv[0]);
    return 2;
  }
  set_num_threads(1);
  const std::filesystem::path source = argv[1];
  std::unique_ptr<tokenizers::Tokenizer> tokenizer;
  if (std::filesystem::is_directory(source) && !std::filesystem::exists(source / "config.json")) {
    tokenizer = tokenizers::load_tokenizer_json(source);
  } else {
    tokenizer = std::move(models::load_model(source).tokenizer);
  }
  std::ifstream in(argc > 2 ? argv[2] : "build/main-job/fortunes.txt", std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  if (text.empty()) {
    fmt::print(stderr, "no text to encode\n");
    return 1;
  }
  std::size_t tokens = 0;
  auto pass = [&] {
    tokens = 0;
    for (std::size_t at = 0; at < text.size(); at += 65536)
      tokens += tokenizer->encode(std::string_view(text).substr(at, 65536), false, false).size();
  };
  pass();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  pass();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("{{\"tokenizer\": \"{}\", \"bytes\": {}, \"tokens\": {}, \"mb_per_s\": {:.2f}}}\n", source.string(),
             text.size(), tokens, static_cast<double>(text.size()) / 1e6 / seconds);
  return 0;
}
