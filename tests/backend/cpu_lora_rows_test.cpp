// A few rows through a LoRA projection in one pass (lora_rows, a generated token's unmerged
// adapter) against a double-precision reference: t = x Aᵀ, y = x Wᵀ + scale t Bᵀ, with an f32
// weight and with a bf16 one (multiplied by x rounded to bf16), rows 1 to 8, an inner size and an
// output size that leave partial vectors and uneven shares, with two and three threads.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/threads.h"
#include "core/dtype.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

using testing::sine_values;

void expect_matches_reference(i64 rows, i64 in, i64 out, i64 r, bool bf16) {
  const auto x = sine_values(rows * in, 0.31f), a = sine_values(r * in, 0.17f), b = sine_values(out * r, 0.53f);
  auto wf = sine_values(out * in, 0.07f);
  std::vector<std::uint16_t> w16(wf.size());
  for (std::size_t i = 0; i < wf.size(); ++i) {
    w16[i] = float_to_bf16(wf[i]);
    if (bf16) wf[i] = bf16_to_float(w16[i]);  // the reference multiplies the bf16 weight's values
  }
  const float scale = 1.5f;
  std::vector<float> t(static_cast<std::size_t>(rows * r)), y(static_cast<std::size_t>(rows * out));
  lora_rows(x.data(), bf16 ? static_cast<const void*>(w16.data()) : wf.data(), bf16 ? DType::bf16 : DType::f32, {},
            a.data(), b.data(), rows, in, out, r, scale, t.data(), y.data());
  for (i64 row = 0; row < rows; ++row) {
    std::vector<double> want_t(static_cast<std::size_t>(r));
    for (i64 k = 0; k < r; ++k) {
      for (i64 p = 0; p < in; ++p) want_t[k] += static_cast<double>(x[row * in + p]) * a[k * in + p];
      ASSERT_NEAR(t[row * r + k], want_t[k], 1e-4 * in) << "t at row " << row << ", " << k;
    }
    for (i64 j = 0; j < out; ++j) {
      double want = 0;
      for (i64 p = 0; p < in; ++p) {
        const float xp = bf16 ? bf16_to_float(float_to_bf16(x[row * in + p])) : x[row * in + p];
        want += static_cast<double>(xp) * wf[j * in + p];
      }
      for (i64 k = 0; k < r; ++k) want += scale * want_t[k] * b[j * r + k];
      ASSERT_NEAR(y[row * out + j], want, 1e-4 * (in + r)) << "y at row " << row << ", column " << j << " bf16 " << bf16;
    }
  }
}

TEST(CpuLoraRows, OnePassMatchesTheReference) {
  const int saved = num_threads();
  for (const int threads : {2, 3}) {
    set_num_threads(threads);
    for (const bool bf16 : {false, true})
      for (const i64 rows : {1, 3, 8}) {
        expect_matches_reference(rows, 100, 37, 16, bf16);
        expect_matches_reference(rows, 768, 300, 8, bf16);
        expect_matches_reference(rows, 100, 37, 13, bf16);  // t's rows of A in groups of 8, 4 and one
      }
  }
  set_num_threads(saved);
}

}  // namespace
}  // namespace loracpp::backend::cpu
