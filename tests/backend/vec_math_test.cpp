// The vectorisable exp stays within a few ulp of std::exp and gives 0 for -inf.
#include "backend/cpu/vec_math.h"

#include <cmath>
#include <limits>

#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

TEST(FastExp, WithinFourUlpOfStdExpOverTheNormalRange) {
  float worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const float want = std::exp(x), got = fast_exp(x);
    worst = std::max(worst, std::abs(got - want) / (want * std::numeric_limits<float>::epsilon()));
  }
  EXPECT_LT(worst, 4.0f);
}

TEST(FastExp, UnderflowsToZeroAndOverflowsToInfinity) {
  EXPECT_EQ(fast_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(fast_exp(-100.0f), 0.0f);
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  EXPECT_TRUE(std::isinf(fast_exp(100.0f)));
}

TEST(FastExp, ArrayFormAgreesWithTheScalarFormAndSums) {
  std::vector<float> x(101), out(101);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = -20.0f + 0.4f * static_cast<float>(i);
  x[7] = -std::numeric_limits<float>::infinity();
  const float sum = exp_shifted(x.data(), 1.5f, 0.5f, out.data(), static_cast<std::int64_t>(x.size()));
  double want_sum = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float want = fast_exp(x[i] - 1.5f) * 0.5f;
    EXPECT_NEAR(out[i], want, 2e-7 * std::abs(want)) << i;
    want_sum += want;
  }
  EXPECT_EQ(out[7], 0.0f);
  EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum);
}

}  // namespace
}  // namespace loracpp::backend::cpu
