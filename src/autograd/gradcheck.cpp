#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/backward.h"
#include "core/random.h"
#include "ops/ops.h"

namespace loracpp::autograd {

namespace {
double project(const Tensor& out, const std::vector<float>& weights) {
  const auto values = out.to_floats();
  double total = 0;
  for (std::size_t i = 0; i < values.size(); ++i) total += static_cast<double>(values[i]) * weights[i];
  return total;
}
}  // namespace

GradCheckResult gradcheck(const GradCheckFn& fn, const std::vector<Tensor>& inputs, const GradCheckOptions& options) {
  GradCheckResult result;
  for (const auto& input : inputs) {
    if (input.defined() && input.requires_grad()) {
      check(input.dtype() == DType::f32 && input.is_contiguous() && input.is_leaf(), "gradcheck",
            "inputs that require grad must be contiguous f32 leaves");
      input.impl().grad.reset();
    }
  }
  // Analytic: backward of sum(out * r).
  Tensor out = fn(inputs);
  Rng rng(options.seed);
  std::vector<float> weights(static_cast<std::size_t>(out.numel()));
  for (auto& w : weights) w = rng.uniform(-1.0f, 1.0f);
  check(out.requires_grad(), "gradcheck", "the output does not depend on any input that requires grad");
  backward(ops::sum(ops::mul(out, Tensor::from_floats(weights, out.shape(), out.dtype()))));

  NoGradGuard no_grad;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor input = inputs[k];
    if (!input.defined() || !input.requires_grad()) continue;
    const Tensor grad = input.grad();
    const std::vector<float> analytic =
        grad.defined() ? grad.to_floats() : std::vector<float>(static_cast<std::size_t>(input.numel()), 0.0f);
    float* data = input.mutable_data<float>();
    for (std::int64_t i = 0; i < input.numel(); ++i) {
      const float original = data[i];
      data[i] = original + options.step;
      const double plus = project(fn(inputs), weights);
      data[i] = original - options.step;
      const double minus = project(fn(inputs), weights);
      data[i] = original;
      const double numeric = (plus - minus) / (2.0 * static_cast<double>(options.step));
      const double error = std::abs(analytic[static_cast<std::size_t>(i)] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, error);
      ++result.checked;
      if (error > options.atol + options.rtol * std::abs(numeric)) {
        if (result.ok || result.report.size() < 2000)
          result.report += fmt::format("input {} element {}: analytic {} numeric {}\n", k, i,
                                       analytic[static_cast<std::size_t>(i)], numeric);
        result.ok = false;
      }
    }
  }
  return result;
}

}  // namespace loracpp::autograd
