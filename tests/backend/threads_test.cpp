#include <cblas.h>

#include "backend/threads.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp {
namespace {

class Threads : public ::testing::Test {
 protected:
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = num_threads();
};

TEST_F(Threads, SettingReachesBlasAndOurKernels) {
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  EXPECT_EQ(openblas_get_num_threads(), 1);
  set_num_threads(2);
  EXPECT_EQ(num_threads(), 2);
  EXPECT_EQ(openblas_get_num_threads(), 2);
  EXPECT_TRUE(testing::throws_with_prefix([] { set_num_threads(0); }, "[threads] thread count must be at least 1"));
}

TEST_F(Threads, OurKernelsGiveTheSameBitsOnAnyThreadCount) {
  Rng rng(9);
  const Tensor x = randn({256, 512}, rng), w = randn({512}, rng);
  auto run = [&] { return ops::softmax(ops::swiglu(ops::rms_norm(x, w, 1e-5f), x), -1).to_floats(); };
  set_num_threads(1);
  const auto one = run();
  set_num_threads(2);
  EXPECT_EQ(run(), one);
}

}  // namespace
}  // namespace loracpp
