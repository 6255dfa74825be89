#pragma once
// Activation checkpointing: a segment of the forward pass (a decoder layer) keeps only its input.
// Its activations are not recorded; the backward pass runs the segment again, recording, and
// backpropagates through that copy. Memory for activations drops to one segment's plus each
// segment's input, for one more forward pass of compute (PyTorch's torch.utils.checkpoint, the
// `gradient_checkpointing` of HuggingFace models).
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace loracpp::autograd {

using Segment = std::function<Tensor(const Tensor&)>;

// segment(x), recorded as one node over x and `parameters`: the leaves segment reads that may
// need gradients (an adapter's A and B; every weight in full fine-tuning). segment must compute
// the same values when run again: anything random in it has to derive from fixed seeds, as
// dropout's masks do. Without recording (no grad mode, or nothing requiring grad) it is just
// segment(x).
Tensor checkpoint(const Segment& segment, const Tensor& x, const std::vector<Tensor>& parameters);

}  // namespace loracpp::autograd
