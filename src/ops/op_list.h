#pragma once
// The list of differentiable ops. Each op records its autograd node under its OpId and marks
// itself with trace_op(), and the test suite requires every entry here to be covered by the
// finite-difference harness and by the reference fixtures: adding an op means adding it here,
// and then the tests ask for its checks.
#include <array>
#include <cstdint>
#include <string_view>

namespace loracpp::ops {

#define LORACPP_OPS(X)                                                                                   \
  X(contiguous) X(to_dtype) X(reshape) X(permute) X(transpose) X(slice) X(broadcast_to) X(concat)      \
  X(split) X(add) X(sub) X(mul) X(div) X(scale) X(sum) X(mean) X(matmul) X(linear) X(lora_linear) X(embedding)        \
  X(rms_norm) X(layer_norm) X(softmax) X(silu) X(gelu) X(swiglu) X(dropout) X(cross_entropy) X(linear_cross_entropy) X(rope)   \
  X(attention) X(im2col) X(conv2d) X(max_pool2d) X(avg_pool2d) X(checkpoint)

enum class OpId : std::uint16_t {
#define LORACPP_OP_ENUM(name) name,
  LORACPP_OPS(LORACPP_OP_ENUM)
#undef LORACPP_OP_ENUM
};

inline constexpr std::array kOpNames = {
#define LORACPP_OP_NAME(name) std::string_view(#name),
    LORACPP_OPS(LORACPP_OP_NAME)
#undef LORACPP_OP_NAME
};
inline constexpr std::size_t kOpCount = kOpNames.size();

constexpr std::string_view op_name(OpId op) { return kOpNames[static_cast<std::size_t>(op)]; }

}  // namespace loracpp::ops
