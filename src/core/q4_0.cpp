#include "core/q4_0.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"

namespace loracpp::q4_0 {

namespace {
std::uint8_t code(float scaled) {
  // scaled lies in [-8, 8] up to rounding; + 8.5 and truncation round it to the nearest code.
  return static_cast<std::uint8_t>(std::clamp(static_cast<int>(scaled + 8.5f), 0, 15));
}
}  // namespace

void quantize(const float* x, void* blocks, std::int64_t n) {
  auto* out = static_cast<std::uint8_t*>(blocks);
  for (std::int64_t b = 0; b < n / kBlock; ++b, x += kBlock, out += kBlockBytes) {
    float largest = 0;  // the value of largest magnitude, its sign kept (the first one on a tie)
    for (std::int64_t i = 0; i < kBlock; ++i)
      if (std::fabs(x[i]) > std::fabs(largest)) largest = x[i];
    const float d = largest / -8.0f, inverse = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (std::int64_t j = 0; j < kBlock / 2; ++j)
      out[2 + j] = static_cast<std::uint8_t>(code(x[j] * inverse) | (code(x[j + kBlock / 2] * inverse) << 4));
  }
}

void dequantize(const void* blocks, float* x, std::int64_t n) {
  const auto* in = static_cast<const std::uint8_t*>(blocks);
  for (std::int64_t b = 0; b < n / kBlock; ++b, x += kBlock, in += kBlockBytes) {
    const float d = load_f16(in);
    for (std::int64_t j = 0; j < kBlock / 2; ++j) {
      x[j] = static_cast<float>((in[2 + j] & 0x0F) - 8) * d;
      x[j + kBlock / 2] = static_cast<float>((in[2 + j] >> 4) - 8) * d;
    }
  }
}

}  // namespace loracpp::q4_0
