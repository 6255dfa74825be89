// The `lora` executable: flags, errors and the demo, run as a user runs them.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "test_util.h"

namespace loracpp {
namespace {

struct CliRun {
  int status;
  std::string output;  // stdout and stderr
};

CliRun run_cli(const std::string& args) {
  const std::string command = std::string(LORACPP_CLI_PATH) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe)) output += buffer.data();
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(Cli, HelpListsTheCommandsAndOptions) {
  const CliRun r = run_cli("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("--threads"), std::string::npos);
  EXPECT_NE(r.output.find("demo"), std::string::npos);
}

TEST(Cli, UnknownFlagIsRefusedWithNonZeroExit) {
  const CliRun r = run_cli("demo --stepz 3");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--stepz"), std::string::npos) << r.output;
}

TEST(Cli, InvalidThreadCountIsRefused) {
  const CliRun r = run_cli("--threads 0 demo");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--threads"), std::string::npos) << r.output;
}

TEST(Cli, DemoTrainsTheAdapterDownToASmallLoss) {
  const CliRun r = run_cli("--threads 1 demo --steps 150 --rank 4");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto at = r.output.find("final loss ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const double final_loss = std::stod(r.output.substr(at + 11));
  const auto first = r.output.find("loss ");
  const double first_loss = std::stod(r.output.substr(first + 5));
  EXPECT_LT(final_loss, 0.1 * first_loss) << r.output;
}

}  // namespace
}  // namespace loracpp
