#include "autograd/backward.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "ops/ops.h"

namespace loracpp::autograd {

namespace {

// Whether nothing but `slot` can see its tensor's values: the only handle on the tensor and on its
// storage (no view, no other gradient slot, no node or caller holding it).
bool held_only_here(const Tensor& slot) {
  return slot.impl_ptr().use_count() == 1 && slot.storage() && slot.storage().use_count() == 1;
}

// slot += grad: in place where slot alone holds a contiguous f32 gradient (a residual stream's
// gradient gathers one term per use), else into a new tensor.
void accumulate(Tensor& slot, const Tensor& grad) {
  if (!slot.defined()) {
    slot = grad;
  } else if (held_only_here(slot) && slot.dtype() == DType::f32 && slot.is_contiguous() &&
             grad.shape() == slot.shape() && grad.device() == slot.device()) {
    ops::add_into(slot, grad);
  } else {
    slot = ops::add(slot, grad);
  }
}

// A leaf's gradient gets storage of its own: the one handed back may be a view of saved state.
Tensor owned(const Tensor& grad) { return ops::scale(grad, 1.0f); }

// Gradients arrive with the shape of the tensor they belong to, in its dtype or (for a node that
// takes them so, Node::takes_bf16_grad) in bf16.
void check_grad(const Node& node, std::size_t i, const Tensor& grad) {
  const Tensor& input = node.inputs[i];
  check(grad.defined() && grad.shape() == input.shape(), "backward",
        "op {} returned a gradient of shape {} for input {} of shape {}", ops::op_name(node.op),
        shape_str(grad), i, shape_str(input.shape()));
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad_root) {
  check(root.defined() && root.requires_grad(), "backward", "the tensor does not require grad: nothing to do");
  Tensor seed = grad_root;
  if (!seed.defined()) {
    check(root.numel() == 1, "backward", "a non-scalar root {} needs an explicit gradient",
          shape_str(root.shape()));
    seed = Tensor::full(root.shape(), 1.0f, root.dtype()).to(root.device());
  }
  check(seed.shape() == root.shape(), "backward", "gradient shape {} differs from the root's {}",
        shape_str(seed.shape()), shape_str(root.shape()));
  NoGradGuard no_grad;

  if (root.is_leaf()) {
    Tensor g = root.grad();
    accumulate(g, owned(seed));
    root.impl().grad = g.impl_ptr();
    return;
  }

  // Every node the root depends on, replayed newest first: the tape in reverse.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack{root.grad_fn().get()};
  seen.insert(stack.back());
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    order.push_back(node);
    for (const auto& input : node->inputs) {
      if (!input.defined()) continue;
      Node* parent = input.grad_fn().get();
      if (parent && seen.insert(parent).second) stack.push_back(parent);
    }
  }
  std::sort(order.begin(), order.end(), [](Node* a, Node* b) { return a->sequence > b->sequence; });

  std::unordered_map<Node*, Tensor> pending;  // gradient of each node's output
  pending[root.grad_fn().get()] = seed;
  for (Node* node : order) {
    auto it = pending.find(node);
    if (it == pending.end()) continue;
    const Tensor grad_output = it->second;
    pending.erase(it);
    std::vector<Tensor> grads = node->backward(*node, grad_output);
    check(grads.size() == node->inputs.size(), "backward", "op {} returned {} gradients for {} inputs",
          ops::op_name(node->op), grads.size(), node->inputs.size());
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!node->needs_grad(i)) continue;
      check_grad(*node, i, grads[i]);
      const Tensor& input = node->inputs[i];
      Tensor g = grads[i];
      if (input.is_leaf()) {
        if (g.dtype() != input.dtype()) g = ops::to_dtype(g, input.dtype());
        Tensor slot = input.grad();
        accumulate(slot, slot.defined() ? g : owned(g));
        input.impl().grad = slot.impl_ptr();
        continue;
      }
      Node* producer = input.grad_fn().get();
      Tensor& slot = pending[producer];
      // A bf16 gradient stays bf16 for a node that takes it, while it is the only term; sums are
      // made in the tensor's own dtype.
      if (slot.defined() || g.dtype() != DType::bf16 || !producer->takes_bf16_grad) {
        if (g.dtype() != input.dtype()) g = ops::to_dtype(g, input.dtype());
        if (slot.defined() && slot.dtype() != input.dtype()) slot = ops::to_dtype(slot, input.dtype());
      }
      accumulate(slot, g);
    }
  }
}

}  // namespace loracpp::autograd
