#pragma once
// One error type for every misuse and every bad input. Messages start with the
// place in brackets: "[matmul] inner dimensions differ: a is [2, 3], b is [4, 5]".
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace loracpp {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(std::string_view place, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format("[{}] {}", place, fmt::format(format, std::forward<Args>(args)...)));
}

template <class... Args>
void check(bool ok, std::string_view place, fmt::format_string<Args...> format, Args&&... args) {
  if (!ok) fail(place, format, std::forward<Args>(args)...);
}

}  // namespace loracpp
