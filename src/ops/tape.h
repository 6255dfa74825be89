#pragma once
// What ops record while grad mode is on: one Node per op output that depends on a tensor
// requiring grad. Nodes carry a sequence number, so replaying them in decreasing order is replaying
// the tape backwards (autograd/backward.h). Tensors that need no gradient are never recorded,
// and a node's backward is told which inputs need gradients so it can skip the rest (a frozen
// weight's gradient GEMM is never computed).
#include <cstdint>
#include <functional>
#include <vector>

#include "core/tensor.h"
#include "ops/op_list.h"

namespace loracpp::autograd {

struct Node;
// Returns one gradient per input (an undefined Tensor where node.needs_grad(i) is false). A backward
// function must not hold the op's output tensor (that would be a reference cycle through the
// node); it may hold another tensor viewing the same storage.
using BackwardFn = std::function<std::vector<Tensor>(const Node& node, const Tensor& grad_output)>;

struct Node {
  ops::OpId op;
  std::uint64_t sequence;
  // Each input as the backward pass needs it: a trainable leaf itself (its gradient lands there);
  // any other tensor as a handle with its shape, dtype and producing node but, unless the op
  // records with BackwardReads::inputs, without its storage, so that a node keeps alive only what
  // its backward function captured.
  std::vector<Tensor> inputs;
  BackwardFn backward;
  // Whether backward also takes its output's gradient in bf16 (a projection that multiplies it in
  // bf16): a producer that can round as it writes hands it over in bf16 and spares the engine a
  // widening and this node a rounding pass. The engine widens it where a second term joins it.
  bool takes_bf16_grad = false;
  bool needs_grad(std::size_t input) const { return inputs[input].defined() && inputs[input].requires_grad(); }
};

bool grad_enabled();

// Sets grad mode for its lifetime and puts the previous mode back after.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// Recording off (evaluation, optimiser steps, the backward pass itself).
struct NoGradGuard : GradModeGuard {
  NoGradGuard() : GradModeGuard(false) {}
};

// Recording on: a checkpointed segment recomputed inside the backward pass (autograd/checkpoint.h).
struct EnableGradGuard : GradModeGuard {
  EnableGradGuard() : GradModeGuard(true) {}
};

// True when grad mode is on and some input requires grad.
bool should_record(const std::vector<Tensor>& inputs);

// Whether a backward function reads its inputs' values through node.inputs (mul, div, matmul) or
// only their shapes and dtypes (every op that captures what it needs).
enum class BackwardReads { shapes, inputs };

// Makes output the result of a recorded op when should_record(inputs); returns output either way.
Tensor record(ops::OpId op, Tensor output, std::vector<Tensor> inputs, BackwardFn backward,
              BackwardReads reads = BackwardReads::shapes);

// Op tracing, for coverage checks: while a TraceScope is alive, every trace_op() call is counted.
void trace_op(ops::OpId op);
class TraceScope {
 public:
  TraceScope();
  ~TraceScope();
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  bool saw(ops::OpId op) const { return counts_[static_cast<std::size_t>(op)] > 0; }

 private:
  std::vector<std::uint64_t> counts_;
  TraceScope* previous_;
  friend void trace_op(ops::OpId op);
};

}  // namespace loracpp::autograd
