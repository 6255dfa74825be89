#pragma once
#include <cstdint>
#include <string_view>

namespace loracpp {

// Where a tensor's bytes live. Every op dispatches on it (see backend/kernels.h).
enum class Device : std::uint8_t { cpu, cuda };

inline std::string_view device_name(Device device) {
  switch (device) {
    case Device::cpu: return "cpu";
    case Device::cuda: return "cuda";
  }
  return "?";
}

}  // namespace loracpp
