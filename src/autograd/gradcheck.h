#pragma once
// Finite-difference checks of backward passes.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace loracpp::autograd {

// The checks run in f32 (the engine has no f64 tensors). With step h, the central difference of
// f = sum(out * r) (r fixed, random) has truncation error ~h^2 |f'''| / 6 and rounding error
// ~eps_f32 * |f| * sqrt(outputs) / h. For h = 2e-3 and the small O(1) cases of the harness that is
// ~1e-6 + ~1e-3, hence the default tolerance |analytic - numeric| <= 3e-3 + 2e-2 |numeric|.
struct GradCheckOptions {
  float step = 2e-3f;
  double atol = 3e-3;
  double rtol = 2e-2;
  std::uint64_t seed = 1234;
};

struct GradCheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::int64_t checked = 0;  // elements compared
  std::string report;        // the first mismatches, when !ok
};

using GradCheckFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

// Compares the backward pass of fn against central differences for every f32 input that requires
// grad. Inputs are perturbed in place and restored.
GradCheckResult gradcheck(const GradCheckFn& fn, const std::vector<Tensor>& inputs,
                          const GradCheckOptions& options = {});

}  // namespace loracpp::autograd
