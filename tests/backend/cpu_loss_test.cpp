// The CPU cross-entropy kernels that take the loss and write the gradient in one pass (in f32, in
// place of the logits, or in bf16), against the forward and backward kernels they stand for: the
// same loss and log-sum-exp, the same gradient (up to its bf16 rounding), and zeros on ignored rows;
// over a vocabulary that is no multiple of 16.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/dtype.h"
#include "core/random.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

TEST(CpuCrossEntropy, Bf16GradientPassMatchesTheForwardAndBackwardKernels) {
  const i64 rows = 37, vocab = 1003;
  std::vector<float> logits(static_cast<std::size_t>(rows * vocab));
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = 6.0f * (2.0f * uniform_at(3, i) - 1.0f);
  std::vector<i64> targets(static_cast<std::size_t>(rows));
  for (i64 r = 0; r < rows; ++r) targets[static_cast<std::size_t>(r)] = r % 5 == 2 ? -100 : (r * 131) % vocab;
  targets[0] = vocab - 1;  // a target in the tail the vector loop does not cover

  std::vector<float> loss(targets.size()), lse(targets.size()), grad(logits.size());
  cross_entropy_forward(logits.data(), targets.data(), loss.data(), lse.data(), rows, vocab, -100);
  cross_entropy_backward(logits.data(), targets.data(), lse.data(), 0.25f, grad.data(), rows, vocab, -100);

  std::vector<float> fused_loss(targets.size()), fused_lse(targets.size());
  std::vector<std::uint16_t> grad16(logits.size(), 0xffff);
  cross_entropy_with_bf16_grad(logits.data(), targets.data(), fused_loss.data(), fused_lse.data(), 0.25f, grad16.data(),
                               rows, vocab, -100);
  for (i64 r = 0; r < rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    EXPECT_NEAR(fused_lse[i], lse[i], 1e-5f * std::abs(lse[i])) << "row " << r;
    EXPECT_NEAR(fused_loss[i], loss[i], 1e-5f * (1.0f + std::abs(loss[i]))) << "row " << r;
    for (i64 v = 0; v < vocab; ++v) {
      const auto j = static_cast<std::size_t>(r * vocab + v);
      const float got = bf16_to_float(grad16[j]), want = grad[j];
      if (targets[i] == -100) {
        ASSERT_EQ(grad16[j], 0) << "row " << r << " is ignored";
      } else {
        // bf16 keeps 8 significant bits: within one rounding step of the f32 gradient.
        ASSERT_NEAR(got, want, std::abs(want) * (1.0f / 256) + 1e-12f) << "row " << r << ", column " << v;
      }
    }
    if (targets[i] != -100) {
      EXPECT_LT(bf16_to_float(grad16[static_cast<std::size_t>(r * vocab + targets[i])]), 0.0f);
    }
  }
}

TEST(CpuCrossEntropy, InPlaceGradientPassMatchesTheForwardAndBackwardKernels) {
  const i64 rows = 29, vocab = 517;
  std::vector<float> logits(static_cast<std::size_t>(rows * vocab));
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = 5.0f * (2.0f * uniform_at(4, i) - 1.0f);
  std::vector<i64> targets(static_cast<std::size_t>(rows));
  for (i64 r = 0; r < rows; ++r) targets[static_cast<std::size_t>(r)] = r % 4 == 1 ? -100 : (r * 71) % vocab;
  targets[2] = vocab - 1;

  std::vector<float> loss(targets.size()), lse(targets.size()), grad(logits.size());
  cross_entropy_forward(logits.data(), targets.data(), loss.data(), lse.data(), rows, vocab, -100);
  cross_entropy_backward(logits.data(), targets.data(), lse.data(), 0.5f, grad.data(), rows, vocab, -100);

  std::vector<float> fused_loss(targets.size()), fused_lse(targets.size()), in_place = logits;
  cross_entropy_with_grad(in_place.data(), targets.data(), fused_loss.data(), fused_lse.data(), 0.5f, in_place.data(),
                          rows, vocab, -100);
  for (i64 r = 0; r < rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    EXPECT_NEAR(fused_lse[i], lse[i], 1e-5f * std::abs(lse[i])) << "row " << r;
    EXPECT_NEAR(fused_loss[i], loss[i], 1e-5f * (1.0f + std::abs(loss[i]))) << "row " << r;
    for (i64 v = 0; v < vocab; ++v) {
      const auto j = static_cast<std::size_t>(r * vocab + v);
      ASSERT_NEAR(in_place[j], grad[j], 1e-6f + 1e-5f * std::abs(grad[j])) << "row " << r << ", column " << v;
    }
  }
}

}  // namespace
}  // namespace loracpp::backend::cpu
