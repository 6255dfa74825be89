// Rotary position embedding, in the HuggingFace half-split and the interleaved layouts.
#include <cmath>

#include "ops/common.h"
#include "ops/ops.h"

namespace loracpp::ops {

using namespace detail;

std::vector<float> rope_inv_freq(std::int64_t head_dim, float theta) {
  std::vector<float> inv_freq(static_cast<std::size_t>(head_dim / 2));
  for (std::size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = static_cast<float>(1.0 / std::pow(static_cast<double>(theta),
                                                    2.0 * static_cast<double>(i) / static_cast<double>(head_dim)));
  return inv_freq;
}

namespace {
Tensor rope_raw(const Tensor& x, const Tensor& inv_freq, std::int64_t offset, RopeLayout layout, bool inverse) {
  const Tensor xf = as_f32(x);
  Tensor y = empty_f32(x.shape(), x.device());
  const std::int64_t head_dim = x.size(-1), seq = x.size(-2), outer = x.numel() / std::max<std::int64_t>(seq * head_dim, 1);
  LORACPP_KERNEL(x.device(), rope)(f32(xf), f32(y), outer, seq, head_dim, f32(inv_freq), offset, layout, inverse);
  return y;
}

// The frequencies as a tensor on `device`; every layer asks for the same, so the latest is kept.
Tensor frequencies(const RopeOptions& options, std::int64_t head_dim, Device device) {
  check(head_dim % 2 == 0, "rope", "head_dim must be even, got {}", head_dim);
  std::vector<float> freqs = options.inv_freq.empty() ? rope_inv_freq(head_dim, options.theta) : options.inv_freq;
  check(static_cast<std::int64_t>(freqs.size()) == head_dim / 2, "rope",
        "inv_freq must have head_dim/2 = {} entries, got {}", head_dim / 2, freqs.size());
  thread_local std::vector<float> latest_freqs;
  thread_local Tensor latest;
  if (!latest.defined() || latest.device() != device || latest_freqs != freqs) {
    latest = Tensor::from_floats(freqs, {head_dim / 2}).to(device);
    latest_freqs = freqs;
  }
  return latest;
}

}  // namespace

// x [batch, heads, seq, head_dim] -> same shape
Tensor rope(const Tensor& x, const RopeOptions& options) {
  trace_op(OpId::rope);
  require_floating("rope", x, "input");
  check(x.dim() >= 2, "rope", "input must be [..., seq, head_dim], got {}", shape_str(x.shape()));
  const Tensor inv_freq = frequencies(options, x.size(-1), x.device());
  const std::int64_t offset = options.position_offset;
  const RopeLayout layout = options.layout;
  Tensor y = cast_raw(rope_raw(x, inv_freq, offset, layout, false), x.dtype());
  // The rotation is orthogonal: its backward rotates the gradient by the opposite angle.
  return record(OpId::rope, y, {x}, [inv_freq, offset, layout](const Node& node, const Tensor& g) {
    return std::vector<Tensor>{cast_raw(rope_raw(g, inv_freq, offset, layout, true), node.inputs[0].dtype())};
  });
}

Tensor rope_heads(const Tensor& x, std::int64_t heads, const RopeOptions& options) {
  require_floating("rope", x, "input");
  check(x.dim() == 3 && heads > 0 && x.size(2) % heads == 0, "rope",
        "input must be [batch, seq, heads * head_dim] with {} heads, got {}", heads, shape_str(x.shape()));
  const std::int64_t batch = x.size(0), seq = x.size(1), head_dim = x.size(2) / heads;
  const auto kernel = backend::kernels(x.device()).rope_heads;
  if (kernel == nullptr) return rope(transpose(reshape(x, {batch, seq, heads, head_dim}), 1, 2), options);
  trace_op(OpId::rope);
  const Tensor inv_freq = frequencies(options, head_dim, x.device());
  const std::int64_t offset = options.position_offset;
  const RopeLayout layout = options.layout;
  const Tensor xf = contiguous_raw(as_f32(x));
  Tensor y = empty_f32({batch, heads, seq, head_dim}, x.device());
  kernel(f32(xf), f32(y), batch, heads, seq, head_dim, f32(inv_freq), offset, layout, false, true);
  return record(OpId::rope, cast_raw(y, x.dtype()), {x},
                [inv_freq, offset, layout, kernel, batch, heads, seq, head_dim](const Node& node, const Tensor& g) {
                  const Tensor gf = contiguous_raw(as_f32(g));
                  Tensor dx = empty_f32(node.inputs[0].shape(), gf.device());
                  kernel(f32(gf), f32(dx), batch, heads, seq, head_dim, f32(inv_freq), offset, layout, true, false);
                  return std::vector<Tensor>{cast_raw(dx, node.inputs[0].dtype())};
                });
}

}  // namespace loracpp::ops
