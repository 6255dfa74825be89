#pragma once
// The backward pass: replays the recorded tape (ops/tape.h) in reverse from a scalar.
#include "core/tensor.h"
#include "ops/tape.h"

namespace loracpp::autograd {

// Accumulates d(root)/d(leaf) into the .grad() of every leaf that requires grad and that root
// depends on. root must be a scalar unless grad_root (same shape as root) is given.
void backward(const Tensor& root, const Tensor& grad_root = {});

}  // namespace loracpp::autograd
