#include "nn/lora_layers.h"

#include "core/random.h"
#include "ops/ops.h"

namespace loracpp::nn {

bool branch_active(const LoraBranch& branch, const ForwardContext& context) {
  if (branch.weight == 0.0f || branch.merged) return false;
  return context.active == nullptr || context.active->count(branch.adapter) > 0;
}

Tensor linear_with_adapters(const Tensor& x, const Tensor& weight, const Tensor& bias,
                            std::span<const LoraBranch> branches, const ForwardContext& context,
                            std::uint64_t layer_key) {
  // One active adapter without dropout: the fused op reads x once and accumulates in place.
  const LoraBranch* single = nullptr;
  int active = 0;
  for (const auto& branch : branches)
    if (branch_active(branch, context)) {
      single = &branch;
      ++active;
    }
  if (active == 1 && !(context.training && single->dropout > 0))
    return ops::lora_linear(x, weight, bias, single->a, single->b, single->effective_scale());
  Tensor y = ops::linear(x, weight, bias);
  std::uint64_t index = 0;
  for (const auto& branch : branches) {
    ++index;
    if (!branch_active(branch, context)) continue;
    const Tensor input = context.training && branch.dropout > 0
                             ? ops::dropout(x, branch.dropout, mix64(context.seed ^ mix64(layer_key * 131 + index)))
                             : x;
    y = ops::add(y, ops::scale(ops::linear(ops::linear(input, branch.a), branch.b), branch.effective_scale()));
  }
  return y;
}

Tensor embedding_with_adapters(const Tensor& weight, const Tensor& ids, std::span<const LoraBranch> branches,
                               const ForwardContext& context) {
  Tensor y = ops::embedding(weight, ids);
  for (const auto& branch : branches) {
    if (!branch_active(branch, context)) continue;
    // A^T rows by id: [..., r], then @ B^T -> [..., dim]
    const Tensor rows = ops::embedding(ops::transpose(branch.a, 0, 1), ids);
    y = ops::add(y, ops::scale(ops::linear(rows, branch.b), branch.effective_scale()));
  }
  return y;
}

}  // namespace loracpp::nn
