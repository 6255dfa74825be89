#pragma once
// Helpers shared by the tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace loracpp::testing {

inline nlohmann::json load_fixture(const std::string& name) {
  std::ifstream in(std::string(LORACPP_FIXTURES_DIR) + "/" + name);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return nlohmann::json::parse(in);
}

// Asserts |got - want| <= atol + rtol * |want| elementwise; reports the worst element.
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<double>& want,
                                            double atol, double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != expected " << want.size();
  double worst = 0;
  std::size_t worst_at = 0;
  bool ok = true;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double error = std::abs(static_cast<double>(got[i]) - want[i]);
    const bool same_inf = std::isinf(want[i]) && got[i] == want[i];
    if (!same_inf && !(error <= atol + rtol * std::abs(want[i]))) {
      ok = false;
      if (!(error <= worst)) {
        worst = error;
        worst_at = i;
      }
    }
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << worst_at << ": got " << got[worst_at] << ", expected "
                                       << want[worst_at] << " (error " << worst << ", atol " << atol << ", rtol "
                                       << rtol << ")";
}

inline ::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<float>& want,
                                            double atol, double rtol) {
  return all_close(got, std::vector<double>(want.begin(), want.end()), atol, rtol);
}

inline double max_abs(const std::vector<double>& values) {
  double m = 0;
  for (double v : values)
    if (std::isfinite(v)) m = std::max(m, std::abs(v));
  return m;
}

// Runs fn and expects an Error whose message starts with prefix.
template <class Fn>
::testing::AssertionResult throws_with_prefix(Fn&& fn, const std::string& prefix) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.rfind(prefix, 0) == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message '" << message << "' does not start with '" << prefix << "'";
  }
  return ::testing::AssertionFailure() << "no error thrown";
}

}  // namespace loracpp::testing
