#include "core/q8_0.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"

namespace loracpp::q8_0 {

void quantize(const float* x, void* blocks, std::int64_t n) {
  auto* out = static_cast<std::uint8_t*>(blocks);
  for (std::int64_t b = 0; b < n / kBlock; ++b, x += kBlock, out += kBlockBytes) {
    float amax = 0;
    for (std::int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f, inverse = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (std::int64_t i = 0; i < kBlock; ++i)
      out[2 + i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::lround(x[i] * inverse)));
  }
}

void dequantize(const void* blocks, float* x, std::int64_t n) {
  const auto* in = static_cast<const std::uint8_t*>(blocks);
  for (std::int64_t b = 0; b < n / kBlock; ++b, x += kBlock, in += kBlockBytes) {
    const float d = load_f16(in);
    for (std::int64_t i = 0; i < kBlock; ++i) x[i] = static_cast<float>(static_cast<std::int8_t>(in[2 + i])) * d;
  }
}

}  // namespace loracpp::q8_0
