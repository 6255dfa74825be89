// The CPU cross-entropy kernels that take the loss and write the gradient in one pass (in f32, in
// place of the logits, or in bf16), against the forward and backward kernels they stand for: the
// same loss and log-sum-exp, the same gradient (up to its bf16 rounding), and zeros on ignored rows;
// over vocabularies that are no multiple of 16. And the kernel that goes on to the input gradient
// through a frozen bf16 weight.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/dtype.h"
#include "core/random.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

constexpr i64 kIgnored = -100;

// Random logits, targets with some rows ignored and one target in the tail the vector loops leave,
// and what the separate forward and backward kernels make of them.
struct Reference {
  i64 rows, vocab;
  float grad_scale;
  std::vector<float> logits, loss, lse, grad;
  std::vector<i64> targets;

  Reference(i64 rows_, i64 vocab_, float grad_scale_, std::uint64_t seed)
      : rows(rows_), vocab(vocab_), grad_scale(grad_scale_), logits(static_cast<std::size_t>(rows * vocab)),
        loss(static_cast<std::size_t>(rows)), lse(loss.size()), grad(logits.size()), targets(loss.size()) {
    for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = 6.0f * (2.0f * uniform_at(seed, i) - 1.0f);
    for (i64 r = 0; r < rows; ++r) targets[static_cast<std::size_t>(r)] = r % 5 == 2 ? kIgnored : (r * 131) % vocab;
    targets[0] = vocab - 1;
    cross_entropy_forward(logits.data(), targets.data(), loss.data(), lse.data(), rows, vocab, kIgnored);
    cross_entropy_backward(logits.data(), targets.data(), lse.data(), grad_scale, grad.data(), rows, vocab, kIgnored);
  }

  // Checks a one-pass kernel's loss and log-sum-exp, and its gradient through got_grad(index).
  template <class Grad>
  void expect_matched_by(const std::vector<float>& got_loss, const std::vector<float>& got_lse, const Grad& got_grad,
                         float relative_tolerance) const {
    for (i64 r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      EXPECT_NEAR(got_lse[i], lse[i], 1e-5f * std::abs(lse[i])) << "row " << r;
      EXPECT_NEAR(got_loss[i], loss[i], 1e-5f * (1.0f + std::abs(loss[i]))) << "row " << r;
      for (i64 v = 0; v < vocab; ++v) {
        const auto j = static_cast<std::size_t>(r * vocab + v);
        if (targets[i] == kIgnored) {
          ASSERT_EQ(got_grad(j), 0.0f) << "row " << r << " is ignored";
        } else {
          ASSERT_NEAR(got_grad(j), grad[j], 1e-9f + relative_tolerance * std::abs(grad[j]))
              << "row " << r << ", column " << v;
        }
      }
      if (targets[i] != kIgnored) {
        EXPECT_LT(got_grad(static_cast<std::size_t>(r * vocab + targets[i])), 0.0f);
      }
    }
  }
};

TEST(CpuCrossEntropy, Bf16GradientPassMatchesTheForwardAndBackwardKernels) {
  const Reference want(37, 1003, 0.25f, 3);
  std::vector<float> loss(want.loss.size()), lse(want.lse.size());
  std::vector<std::uint16_t> grad16(want.logits.size(), 0xffff);
  cross_entropy_with_bf16_grad(want.logits.data(), want.targets.data(), loss.data(), lse.data(), want.grad_scale,
                               grad16.data(), want.rows, want.vocab, kIgnored);
  // bf16 keeps 8 significant bits: within one rounding step of the f32 gradient.
  want.expect_matched_by(loss, lse, [&](std::size_t j) { return bf16_to_float(grad16[j]); }, 1.0f / 256);
}

TEST(CpuCrossEntropy, InPlaceGradientPassMatchesTheForwardAndBackwardKernels) {
  const Reference want(29, 517, 0.5f, 4);
  std::vector<float> loss(want.loss.size()), lse(want.lse.size()), in_place = want.logits;
  cross_entropy_with_grad(in_place.data(), want.targets.data(), loss.data(), lse.data(), want.grad_scale,
                          in_place.data(), want.rows, want.vocab, kIgnored);
  want.expect_matched_by(loss, lse, [&](std::size_t j) { return in_place[j]; }, 1e-5f);
}

// The loss with its input gradient through a frozen bf16 weight w [vocab, in] in one kernel: the
// same loss and log-sum-exp, and dx = grad (from the separate kernels) times w, summed in double,
// to within the bf16 rounding of the exponentials (a bf16 step of dx's largest magnitude); ignored
// rows get zeros. `in` is odd, the vocabulary no multiple of 16.
TEST(CpuCrossEntropy, Bf16InputGradientMatchesTheGradientTimesTheWeight) {
  const Reference want(37, 1003, 0.25f, 5);
  const i64 in = 45;
  std::vector<std::uint16_t> w(static_cast<std::size_t>(want.vocab * in));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float_to_bf16(0.5f * (2.0f * uniform_at(9, i) - 1.0f));
  std::vector<double> dx_want(static_cast<std::size_t>(want.rows * in), 0.0);
  double largest = 0;
  for (i64 r = 0; r < want.rows; ++r)
    for (i64 c = 0; c < in; ++c) {
      double sum = 0;
      for (i64 v = 0; v < want.vocab; ++v)
        sum += static_cast<double>(want.grad[static_cast<std::size_t>(r * want.vocab + v)]) *
               bf16_to_float(w[static_cast<std::size_t>(v * in + c)]);
      dx_want[static_cast<std::size_t>(r * in + c)] = sum;
      largest = std::max(largest, std::abs(sum));
    }
  std::vector<float> loss(want.loss.size()), lse(want.lse.size()), dx(dx_want.size(), 1e30f);
  std::vector<std::uint16_t> exps(want.logits.size(), 0xffff);
  cross_entropy_bf16_input_grad(want.logits.data(), want.targets.data(), loss.data(), lse.data(), want.grad_scale,
                                w.data(), exps.data(), dx.data(), want.rows, want.vocab, in, kIgnored);
  ASSERT_GT(largest, 0.0);
  for (i64 r = 0; r < want.rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    EXPECT_NEAR(lse[i], want.lse[i], 1e-5f * std::abs(want.lse[i])) << "row " << r;
    EXPECT_NEAR(loss[i], want.loss[i], 1e-5f * (1.0f + std::abs(want.loss[i]))) << "row " << r;
    for (i64 c = 0; c < in; ++c) {
      const auto j = static_cast<std::size_t>(r * in + c);
      if (want.targets[i] == kIgnored) {
        ASSERT_EQ(dx[j], 0.0f) << "row " << r << " is ignored";
      } else {
        ASSERT_NEAR(dx[j], dx_want[j], largest / 256) << "row " << r << ", column " << c;
      }
    }
  }
}

}  // namespace
}  // namespace loracpp::backend::cpu
