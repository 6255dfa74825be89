#include "autograd/checkpoint.h"

#include "autograd/backward.h"
#include "ops/ops.h"
#include "ops/tape.h"

namespace loracpp::autograd {

Tensor checkpoint(const Segment& segment, const Tensor& x, const std::vector<Tensor>& parameters) {
  trace_op(ops::OpId::checkpoint);
  std::vector<Tensor> inputs{x};
  inputs.insert(inputs.end(), parameters.begin(), parameters.end());
  if (!should_record(inputs)) return segment(x);
  Tensor y;
  {
    NoGradGuard no_grad;
    y = segment(x);
  }
  // The input's values without its node: what the segment is run on again.
  const Tensor saved = x.as_strided(x.shape(), x.strides(), x.byte_offset());
  return record(ops::OpId::checkpoint, y, std::move(inputs),
                [segment, saved, parameters](const Node& node, const Tensor& grad) {
                  // The parameters' gradients so far are set aside, so that after the inner pass
                  // each holds this segment's part alone, handed to the outer pass to add.
                  std::vector<std::shared_ptr<TensorImpl>> earlier;
                  for (const Tensor& p : parameters) {
                    earlier.push_back(p.impl().grad);
                    p.impl().grad = nullptr;
                  }
                  Tensor input = saved.as_strided(saved.shape(), saved.strides(), saved.byte_offset());
                  if (node.needs_grad(0)) input.set_requires_grad();
                  Tensor output;
                  {
                    EnableGradGuard recording;
                    output = segment(input);
                  }
                  if (output.requires_grad())
                    backward(output, grad.dtype() == output.dtype() ? grad : ops::to_dtype(grad, output.dtype()));
                  std::vector<Tensor> grads;
                  grads.push_back(node.needs_grad(0) ? input.grad() : Tensor());
                  for (std::size_t i = 0; i < parameters.size(); ++i) {
                    const Tensor& p = parameters[i];
                    Tensor g = node.needs_grad(i + 1) ? p.grad() : Tensor();
                    if (node.needs_grad(i + 1) && !g.defined()) g = Tensor::zeros(p.shape(), p.dtype(), p.device());
                    p.impl().grad = earlier[i];
                    grads.push_back(g);
                  }
                  if (node.needs_grad(0) && !grads[0].defined())
                    grads[0] = Tensor::zeros(saved.shape(), saved.dtype(), saved.device());
                  return grads;
                });
}

}  // namespace loracpp::autograd
