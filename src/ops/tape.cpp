#include "ops/tape.h"

#include <atomic>

namespace loracpp::autograd {

namespace {
thread_local bool g_grad_enabled = true;
thread_local TraceScope* g_trace = nullptr;
std::atomic<std::uint64_t> g_sequence{0};
}  // namespace

bool grad_enabled() { return g_grad_enabled; }

GradModeGuard::GradModeGuard(bool enabled) : previous_(g_grad_enabled) { g_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { g_grad_enabled = previous_; }

bool should_record(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const auto& input : inputs)
    if (input.defined() && input.requires_grad()) return true;
  return false;
}

namespace {
// An input's shape, dtype and producing node without its storage. A trainable leaf stays itself.
Tensor handle_without_storage(const Tensor& input) {
  if (!input.defined() || (input.is_leaf() && input.requires_grad())) return input;
  const TensorImpl& impl = input.impl();
  auto handle = std::make_shared<TensorImpl>();
  handle->shape = impl.shape;
  handle->strides = impl.strides;
  handle->dtype = impl.dtype;
  handle->requires_grad = impl.requires_grad;
  handle->grad_fn = impl.grad_fn;
  return Tensor(std::move(handle));
}
}  // namespace

Tensor record(ops::OpId op, Tensor output, std::vector<Tensor> inputs, BackwardFn backward, BackwardReads reads) {
  if (!should_record(inputs)) return output;
  for (auto& input : inputs) {
    check(!input.defined() || !input.same_as(output), ops::op_name(op), "records its input as its own output");
    if (reads == BackwardReads::shapes) input = handle_without_storage(input);
  }
  auto node = std::make_shared<Node>();
  node->op = op;
  node->sequence = g_sequence++;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  // A view shares storage but is a tensor of its own, with its own node.
  auto& impl = output.impl();
  impl.grad_fn = std::move(node);
  impl.requires_grad = true;
  return output;
}

void trace_op(ops::OpId op) {
  if (g_trace) ++g_trace->counts_[static_cast<std::size_t>(op)];
}

TraceScope::TraceScope() : counts_(ops::kOpCount, 0), previous_(g_trace) { g_trace = this; }
TraceScope::~TraceScope() { g_trace = previous_; }

}  // namespace loracpp::autograd
