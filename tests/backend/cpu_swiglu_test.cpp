// The CPU SwiGLU backward that writes its gradients in bf16 gives the f32 kernel's gradients
// rounded to nearest even, bit for bit: over lengths that end inside a block and inside a vector,
// threaded and not, with both outputs and with either alone.
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/dtype.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

void expect_bf16_gradients_are_the_f32_ones_rounded(i64 n) {
  std::vector<float> gate(static_cast<std::size_t>(n)), up(gate.size()), dy(gate.size());
  for (std::size_t i = 0; i < gate.size(); ++i) {
    gate[i] = 0.013f * static_cast<float>(i % 613) - 4.0f;
    up[i] = 0.7f - 0.011f * static_cast<float>(i % 257);
    dy[i] = 0.003f * static_cast<float>(i % 911) - 1.3f;
  }
  std::vector<float> dgate(gate.size()), dup(gate.size());
  swiglu_backward(gate.data(), up.data(), dy.data(), dgate.data(), dup.data(), n);
  for (int outputs = 0; outputs < 3; ++outputs) {  // both, the gate's alone, the up's alone
    const bool with_gate = outputs != 2, with_up = outputs != 1;
    std::vector<std::uint16_t> dgate16(gate.size(), 0xffff), dup16(gate.size(), 0xffff);
    swiglu_backward_bf16(gate.data(), up.data(), dy.data(), with_gate ? dgate16.data() : nullptr,
                         with_up ? dup16.data() : nullptr, n);
    for (std::size_t i = 0; i < gate.size(); ++i) {
      const std::uint16_t want_gate = with_gate ? float_to_bf16(dgate[i]) : 0xffff;  // 0xffff: left unwritten
      const std::uint16_t want_up = with_up ? float_to_bf16(dup[i]) : 0xffff;
      ASSERT_EQ(dgate16[i], want_gate) << "n " << n << ", gate's element " << i << ", gate asked for " << with_gate;
      ASSERT_EQ(dup16[i], want_up) << "n " << n << ", up's element " << i << ", up asked for " << with_up;
    }
  }
}

TEST(CpuSwiglu, Bf16GradientsAreTheF32OnesRounded) {
  for (i64 n : {1, 15, 17, 1024, 1037, 40000}) expect_bf16_gradients_are_the_f32_ones_rounded(n);
}

}  // namespace
}  // namespace loracpp::backend::cpu
