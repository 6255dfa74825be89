// The vectorisable exp stays within a few ulp of std::exp and gives 0 for -inf; the array max
// agrees with a scalar loop of std::max; the array rounding to bf16 agrees with float_to_bf16.
#include "backend/cpu/vec_math.h"

#include <cmath>
#include <cstring>
#include <iterator>
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

TEST(FastExp, ArrayFormUnderflowsAndOverflowsInEveryLane) {
  // Extremes at every position of two vectors' worth (AVX-512 or AVX2), each also in the scalar tail;
  // the AVX-512 form takes them unclamped, its masks alone setting those lanes.
  std::vector<float> x(37), out(37);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float extremes[] = {-std::numeric_limits<float>::infinity(), -100.0f, -1e30f, 0.0f, 100.0f,
                              std::numeric_limits<float>::infinity(), 1.0f};
    x[i] = extremes[i % 7];
  }
  exp_shifted(x.data(), 0.0f, 1.0f, out.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (i % 7 < 3) {
      EXPECT_EQ(out[i], 0.0f) << i;
    } else if (i % 7 == 3) {
      EXPECT_EQ(out[i], 1.0f) << i;
    } else if (i % 7 < 6) {
      EXPECT_TRUE(std::isinf(out[i]) && out[i] > 0.0f) << i;
    } else {
      EXPECT_NEAR(out[i], std::exp(1.0f), 4e-7f) << i;
    }
  }
}

TEST(SigmoidArray, AgreesWithTheLogisticFunctionAtEveryLength) {
  std::vector<float> x(41);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = -30.0f + 1.5f * static_cast<float>(i);
  for (std::int64_t n = 0; n <= static_cast<std::int64_t>(x.size()); ++n) {
    std::vector<float> s(static_cast<std::size_t>(n) + 1, -1.0f);
    sigmoid_array(x.data(), s.data(), n);
    for (std::int64_t i = 0; i < n; ++i) {
      const float v = x[static_cast<std::size_t>(i)];
      EXPECT_NEAR(s[static_cast<std::size_t>(i)], 1.0f / (1.0f + std::exp(-v)), 3e-7f) << "n = " << n << ", i = " << i;
    }
    EXPECT_EQ(s.back(), -1.0f) << "wrote past n = " << n;
  }
}

TEST(ToBf16, RoundsAsFloatToBf16AtEveryLength) {
  // Ties (both ways), values that round up into the next binade, infinities, a NaN and ordinary
  // values, scaled on the way; every tail length on both sides of a vector's 16 lanes.
  std::vector<float> x(53);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(1.3f * static_cast<float>(i)) * 1000.0f;
  const std::uint32_t patterns[] = {0x3f808000u, 0x3f818000u, 0x3f7fffffu, 0xc07fff80u, 0x7f7fffffu};
  for (std::size_t i = 0; i < std::size(patterns); ++i) std::memcpy(&x[3 * i + 1], &patterns[i], 4);
  x[20] = std::numeric_limits<float>::infinity();
  x[21] = -std::numeric_limits<float>::infinity();
  x[22] = std::numeric_limits<float>::quiet_NaN();
  for (const float scale : {1.0f, -0.37f}) {
    for (std::int64_t n = 0; n <= static_cast<std::int64_t>(x.size()); ++n) {
      std::vector<std::uint16_t> out(static_cast<std::size_t>(n) + 1, 0xabcd);
      to_bf16(x.data(), out.data(), n, scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const float v = x[static_cast<std::size_t>(i)] * scale;
        const std::uint16_t got = out[static_cast<std::size_t>(i)];
        if (std::isnan(v)) {
          EXPECT_TRUE(std::isnan(bf16_to_float(got))) << "n = " << n << ", i = " << i;
        } else {
          EXPECT_EQ(got, float_to_bf16(v)) << "n = " << n << ", i = " << i << ", scale " << scale;
        }
      }
      EXPECT_EQ(out.back(), 0xabcd) << "wrote past n = " << n;
    }
  }
}

TEST(MaxOf, AgreesWithStdMaxAtEveryLengthAndPassesOverNaN) {
  std::vector<float> x(70);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7f * static_cast<float>(i)) * 10.0f - 3.0f;
  x[40] = std::numeric_limits<float>::quiet_NaN();
  x[3] = -std::numeric_limits<float>::infinity();
  for (std::int64_t n = 0; n <= static_cast<std::int64_t>(x.size()); ++n) {  // every tail length, both sides of 16
    float want = -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < n; ++i) want = std::max(want, x[static_cast<std::size_t>(i)]);
    EXPECT_EQ(max_of(x.data(), n), want) << "n = " << n;
  }
  const float all_masked[3] = {-std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity()};
  EXPECT_EQ(max_of(all_masked, 3), -std::numeric_limits<float>::infinity());
}

}  // namespace
}  // namespace loracpp::backend::cpu
