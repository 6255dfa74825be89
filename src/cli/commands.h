#pragma once
#include <cstdint>

namespace loracpp::cli {

struct DemoOptions {
  int steps = 200;
  int rank = 4;
  std::uint64_t seed = 7;
};
int run_demo(const DemoOptions& options);

}  // namespace loracpp::cli
