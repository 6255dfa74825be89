// The CPU cross-entropy kernels that take the loss and write the gradient in one pass (in f32, in
// place of the logits, or in bf16), against the forward and backward kernels they stand for: the
// same loss and log-sum-exp, the same gradient (up to its bf16 rounding), and zeros on ignored rows;
// over vocabularies that are no multiple of 16. And the kernels that go on to the input gradient
// through a frozen bf16 weight, from the logits or from the layer's input.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/gemm_bf16.h"
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
      : Reference(rows_, vocab_, grad_scale_, random_logits(rows_ * vocab_, seed)) {}

  // Over the given logits [rows, vocab].
  Reference(i64 rows_, i64 vocab_, float grad_scale_, std::vector<float> logits_)
      : rows(rows_), vocab(vocab_), grad_scale(grad_scale_), logits(std::move(logits_)),
        loss(static_cast<std::size_t>(rows)), lse(loss.size()), grad(logits.size()), targets(loss.size()) {
    for (i64 r = 0; r < rows; ++r) targets[static_cast<std::size_t>(r)] = r % 5 == 2 ? kIgnored : (r * 131) % vocab;
    targets[0] = vocab - 1;
    cross_entropy_forward(logits.data(), targets.data(), loss.data(), lse.data(), rows, vocab, kIgnored);
    cross_entropy_backward(logits.data(), targets.data(), lse.data(), grad_scale, grad.data(), rows, vocab, kIgnored);
  }

  static std::vector<float> random_logits(i64 n, std::uint64_t seed) {
    std::vector<float> logits(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = 6.0f * (2.0f * uniform_at(seed, i) - 1.0f);
    return logits;
  }

  // dx = grad w [vocab, in] (bf16) summed in double, and its largest magnitude.
  std::vector<double> input_grad(const std::vector<std::uint16_t>& w, i64 in, double& largest) const {
    std::vector<double> dx(static_cast<std::size_t>(rows * in), 0.0);
    largest = 0;
    for (i64 r = 0; r < rows; ++r)
      for (i64 c = 0; c < in; ++c) {
        double sum = 0;
        for (i64 v = 0; v < vocab; ++v)
          sum += static_cast<double>(grad[static_cast<std::size_t>(r * vocab + v)]) *
                 bf16_to_float(w[static_cast<std::size_t>(v * in + c)]);
        dx[static_cast<std::size_t>(r * in + c)] = sum;
        largest = std::max(largest, std::abs(sum));
      }
    return dx;
  }

  // Checks each row's loss and log-sum-exp against the separate kernels', and its `cols` values of a
  // gradient, got(j) against want(j) within tolerance(j) (j an index into [rows, cols]): zeros on
  // ignored rows.
  template <class Got, class Want, class Tolerance>
  void expect_rows(const std::vector<float>& got_loss, const std::vector<float>& got_lse, i64 cols, const Got& got,
                   const Want& want, const Tolerance& tolerance) const {
    for (i64 r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      EXPECT_NEAR(got_lse[i], lse[i], 1e-5f * std::abs(lse[i])) << "row " << r;
      EXPECT_NEAR(got_loss[i], loss[i], 1e-5f * (1.0f + std::abs(loss[i]))) << "row " << r;
      for (i64 c = 0; c < cols; ++c) {
        const auto j = static_cast<std::size_t>(r * cols + c);
        if (targets[i] == kIgnored) {
          ASSERT_EQ(got(j), 0.0f) << "row " << r << " is ignored";
        } else {
          ASSERT_NEAR(got(j), want(j), tolerance(j)) << "row " << r << ", column " << c;
        }
      }
    }
  }

  // Checks a kernel's loss, log-sum-exp and input gradient dx against input_grad's, to within a
  // bf16 step of its largest magnitude (the exponentials' rounding).
  void expect_input_grad(const std::vector<float>& got_loss, const std::vector<float>& got_lse,
                         const std::vector<float>& dx, const std::vector<std::uint16_t>& w, i64 in) const {
    double largest = 0;
    const std::vector<double> dx_want = input_grad(w, in, largest);
    ASSERT_GT(largest, 0.0);
    expect_rows(got_loss, got_lse, in, [&](std::size_t j) { return dx[j]; }, [&](std::size_t j) { return dx_want[j]; },
                [&](std::size_t) { return largest / 256; });
  }

  // Checks a one-pass kernel's loss and log-sum-exp, and its gradient through got_grad(index).
  template <class Grad>
  void expect_matched_by(const std::vector<float>& got_loss, const std::vector<float>& got_lse, const Grad& got_grad,
                         float relative_tolerance) const {
    expect_rows(got_loss, got_lse, vocab, got_grad, [&](std::size_t j) { return grad[j]; },
                [&](std::size_t j) { return 1e-9f + relative_tolerance * std::abs(grad[j]); });
    for (i64 r = 0; r < rows; ++r) {
      const i64 t = targets[static_cast<std::size_t>(r)];
      if (t != kIgnored) {
        EXPECT_LT(got_grad(static_cast<std::size_t>(r * vocab + t)), 0.0f) << "row " << r;
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

// A frozen bf16 weight w [vocab, in], its values in [-0.5, 0.5).
std::vector<std::uint16_t> bf16_weight(i64 vocab, i64 in, std::uint64_t seed) {
  std::vector<std::uint16_t> w(static_cast<std::size_t>(vocab * in));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float_to_bf16(0.5f * (2.0f * uniform_at(seed, i) - 1.0f));
  return w;
}

// The loss with its input gradient through a frozen bf16 weight w [vocab, in] in one kernel: the
// same loss and log-sum-exp, and dx = grad (from the separate kernels) times w, summed in double,
// to within the bf16 rounding of the exponentials (a bf16 step of dx's largest magnitude); ignored
// rows get zeros. `in` is odd, the vocabulary no multiple of 16.
TEST(CpuCrossEntropy, Bf16InputGradientMatchesTheGradientTimesTheWeight) {
  const Reference want(37, 1003, 0.25f, 5);
  const i64 in = 45;
  const std::vector<std::uint16_t> w = bf16_weight(want.vocab, in, 9);
  std::vector<float> loss(want.loss.size()), lse(want.lse.size()), dx(static_cast<std::size_t>(want.rows * in), 1e30f);
  std::vector<std::uint16_t> exps(want.logits.size(), 0xffff);
  cross_entropy_bf16_input_grad(want.logits.data(), want.targets.data(), loss.data(), lse.data(), want.grad_scale,
                                w.data(), exps.data(), dx.data(), want.rows, want.vocab, in, kIgnored);
  want.expect_input_grad(loss, lse, dx, w, in);
}

// The same from x itself, the logits taken a block of the vocabulary at a time: against the
// logits of x rounded to bf16 times w, summed in double. The vocabulary spans several blocks with
// a short last one, and some rows find their largest logit past the first block (their sums and
// dx scaled down on the way); rows are no multiple of the threads' items.
TEST(CpuCrossEntropy, LinearLossWithoutALogitsBufferMatchesTheLogitsKernels) {
  const i64 rows = 37, vocab = 1003, in = 45;
  const std::vector<std::uint16_t> w = bf16_weight(vocab, in, 11);
  std::vector<float> x(static_cast<std::size_t>(rows * in));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 2.0f * uniform_at(12, i) - 1.0f;
  std::vector<float> logits(static_cast<std::size_t>(rows * vocab));
  for (i64 r = 0; r < rows; ++r)
    for (i64 v = 0; v < vocab; ++v) {
      double sum = 0;
      for (i64 c = 0; c < in; ++c)
        sum += static_cast<double>(bf16_to_float(float_to_bf16(x[static_cast<std::size_t>(r * in + c)]))) *
               bf16_to_float(w[static_cast<std::size_t>(v * in + c)]);
      logits[static_cast<std::size_t>(r * vocab + v)] = static_cast<float>(sum);
    }
  const Reference want(rows, vocab, 0.25f, logits);
  i64 later_largest = 0;
  for (i64 r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * vocab;
    if (want.targets[static_cast<std::size_t>(r)] != kIgnored && std::max_element(row, row + vocab) - row >= 256)
      ++later_largest;
  }
  ASSERT_GT(later_largest, 0) << "no row's largest logit lies past the first block";

  std::vector<float> loss(static_cast<std::size_t>(rows), 1e30f), lse(loss.size(), 1e30f);
  std::vector<float> dx(static_cast<std::size_t>(rows * in), 1e30f);
  const bool taken = linear_cross_entropy_bf16(x.data(), w.data(), want.targets.data(), loss.data(), lse.data(),
                                               want.grad_scale, dx.data(), rows, vocab, in, kIgnored);
  if (!bf16_products_native()) {  // declined: the chunked path's products take it, and nothing is written
    EXPECT_FALSE(taken);
    for (float v : dx) ASSERT_EQ(v, 1e30f);
    return;
  }
  ASSERT_TRUE(taken);
  want.expect_input_grad(loss, lse, dx, w, in);
}

}  // namespace
}  // namespace loracpp::backend::cpu
