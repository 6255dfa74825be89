#pragma once
// Helpers shared by the tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#if defined(LORACPP_WITH_CUDA)
#include "backend/cuda/cuda_backend.h"
#endif

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

// n smooth, deterministic values in [-1, 1] (sin(step i + 0.2)): kernel operands whose every
// element differs, without a random generator.
inline std::vector<float> sine_values(std::int64_t n, float step) {
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::sin(step * static_cast<float>(i) + 0.2f);
  return out;
}

inline double max_abs(const std::vector<double>& values) {
  double m = 0;
  for (double v : values)
    if (std::isfinite(v)) m = std::max(m, std::abs(v));
  return m;
}

// Runs fn and expects an Error whose message starts with (or, with anywhere, contains) text.
template <class Fn>
::testing::AssertionResult throws_with_text(Fn&& fn, const std::string& text, bool anywhere) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    if (anywhere ? message.find(text) != std::string::npos : message.rfind(text, 0) == 0)
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message '" << message << "' does not "
                                         << (anywhere ? "contain '" : "start with '") << text << "'";
  }
  return ::testing::AssertionFailure() << "no error thrown";
}
template <class Fn>
::testing::AssertionResult throws_with_prefix(Fn&& fn, const std::string& prefix) {
  return throws_with_text(std::forward<Fn>(fn), prefix, false);
}
template <class Fn>
::testing::AssertionResult throws_containing(Fn&& fn, const std::string& text) {
  return throws_with_text(std::forward<Fn>(fn), text, true);
}

// Whether a CUDA device can run this build's CUDA backend; tests that need one skip with the reason.
inline bool cuda_available() {
#if defined(LORACPP_WITH_CUDA)
  return backend::cuda::available();
#else
  return false;
#endif
}
inline std::string cuda_unavailable_reason() {
#if defined(LORACPP_WITH_CUDA)
  return backend::cuda::unavailable_reason();
#else
  return "this build has no CUDA backend (nvcc was not found at build time)";
#endif
}

}  // namespace loracpp::testing

namespace loracpp::testing {

inline std::string shared_path(const std::string& relative) { return std::string(LORACPP_SHARED_DIR) + "/" + relative; }
inline std::string fixture_path(const std::string& relative) {
  return std::string(LORACPP_FIXTURES_DIR) + "/" + relative;
}

// A fresh folder under the system temp dir, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline TempDir::TempDir() {
  static int counter = 0;
  path_ = std::filesystem::temp_directory_path() /
          ("loracpp_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::create_directories(path_);
}
inline TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Runs the `lora` executable as a user would; output is stdout (and stderr unless told otherwise).
struct CliRun {
  int status;
  std::string output;
};
inline CliRun run_lora(const std::string& args, bool with_stderr = true) {
  const std::string command = std::string(LORACPP_CLI_PATH) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe)) output += buffer.data();
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

inline std::string last_line(const std::string& text) {
  const auto end = text.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  const auto start = text.rfind('\n', end);
  const std::size_t first = start == std::string::npos ? 0 : start + 1;
  return text.substr(first, end - first + 1);
}

}  // namespace loracpp::testing
