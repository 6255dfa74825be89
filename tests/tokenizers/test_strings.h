#pragma once
// Varied test strings for tokenizer parity: English, code, numbers, whitespace runs, emoji, CJK,
// accents and punctuation, mixed at random from a seed.
#include <string>
#include <vector>

#include "core/random.h"

namespace loracpp::testing {

inline std::vector<std::string> tokenizer_test_strings(std::size_t count, std::uint64_t seed, bool newlines = true) {
  static const std::vector<std::string> pools[] = {
      {"The quick brown fox", "jumps over the lazy dog.", "It's", "they're", "I've", "we'll", "she'd", "don't",
       "Hello, world!", "Once upon a time", "tokenization", "antidisestablishmentarianism", "U.S.A.", "e-mail",
       "HELLO", "MiXeD CaSe", "a", "I", "rock'n'roll", "O'Neil's", "well-known", "co-operate"},
      {"def f(x):", "return x**2", "int main() { return 0; }", "std::vector<int> v;", "#include <stdio.h>",
       "for (i = 0; i < n; ++i)", "x += 1", "a && b || !c", "/* comment */", "// TODO", "arr[0] = {1, 2};",
       "print(f\"{x:>10}\")", "$HOME/bin", "C:\\Windows\\", "<div class=\"a\">", "SELECT * FROM t;"},
      {"0", "7", "42", "1234567890", "3.14159", "-273.15", "1,000,000", "1e-9", "0xFF", "2026-11-22",
       "12:30", "+33 6 12 34 56 78", "v1.2.3", "100%", "$9.99", "1/2"},
      {" ", "  ", "   ", "\t", " \t ", "    indented", "trailing   ", "a  b", "x\t\ty"},
      {"😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🤖 robot", "✨✨", "☃"},
      {"你好", "世界", "日本語のテキスト", "한국어", "漢字かな交じり文", "中文，标点。", "ｆｕｌｌｗｉｄｔｈ"},
      {"café", "naïve", "Ångström", "façade", "Straße", "Ελληνικά", "русский текст", "español ñ", "Ærøskøbing",
       "résumé", "Zürich", "ﬁnance", "e\xcc\x81"},
      {".", ",", "!?", "...", "—", "–", "«quoted»", "\"double\"", "'single'", "(paren)", "[bracket]", "@user",
       "#hashtag", "&amp;", "~/~", "^_^", ":-)", "***", "___"},
  };
  static const std::vector<std::string> line_breaks = {"\n", "\n\n", " \n", "\r\n", "\n   "};
  Rng rng(seed);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::string s;
    const auto parts = 1 + rng.next_u64() % 6;
    for (std::uint64_t p = 0; p < parts; ++p) {
      const auto& pool = pools[rng.next_u64() % (sizeof(pools) / sizeof(pools[0]))];
      if (p > 0) {
        const auto glue = rng.next_u64() % 10;
        if (glue < 6) s += " ";
        else if (glue < 7 && newlines) s += line_breaks[rng.next_u64() % line_breaks.size()];
        else if (glue < 8) s += "  ";
      }
      s += pool[rng.next_u64() % pool.size()];
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace loracpp::testing
