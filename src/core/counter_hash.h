#pragma once
// The counter-based hash every random draw derives from, so a value depends only on (seed, index)
// and the CPU and CUDA backends draw the same dropout masks. Callable from device code.
#include <cstdint>

#include "core/host_device.h"

namespace loracpp {

LORACPP_HOST_DEVICE inline std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 random bits, from (seed, index).
LORACPP_HOST_DEVICE inline float uniform_at(std::uint64_t seed, std::uint64_t index) {
  return static_cast<float>(mix64(mix64(seed) ^ index) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace loracpp
