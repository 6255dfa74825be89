#include "core/dtype.h"

#include <array>
#include <string>

#include "core/error.h"

namespace loracpp {

namespace {
struct DTypeInfo {
  std::string_view name;
  std::int64_t block;
  std::size_t block_bytes;
  bool floating;
};
constexpr std::array kDTypeInfo = {
#define LORACPP_DTYPE_INFO(name, block, bytes, floating) DTypeInfo{#name, block, bytes, floating},
    LORACPP_DTYPES(LORACPP_DTYPE_INFO)
#undef LORACPP_DTYPE_INFO
};
const DTypeInfo& info(DType dtype) { return kDTypeInfo.at(static_cast<std::size_t>(dtype)); }
}  // namespace

std::size_t dtype_size(DType dtype) {
  const DTypeInfo& i = info(dtype);
  check(i.block == 1, "dtype", "{} stores blocks of {} values in {} bytes; its values have no size of their own",
        i.name, i.block, i.block_bytes);
  return i.block_bytes;
}
std::int64_t dtype_block(DType dtype) { return info(dtype).block; }
bool is_block_dtype(DType dtype) { return info(dtype).block != 1; }
std::size_t dtype_bytes(DType dtype, std::int64_t numel) {
  const DTypeInfo& i = info(dtype);
  check(numel % i.block == 0, "dtype", "{} stores blocks of {} values; {} values do not fill whole blocks", i.name,
        i.block, numel);
  return static_cast<std::size_t>(numel / i.block) * i.block_bytes;
}
std::string_view dtype_name(DType dtype) { return info(dtype).name; }
bool is_floating(DType dtype) { return info(dtype).floating; }

DType parse_dtype(std::string_view name) {
  std::string known;
  for (std::size_t i = 0; i < kDTypeInfo.size(); ++i) {
    if (kDTypeInfo[i].name == name) return static_cast<DType>(i);
    known += (i ? ", " : "") + std::string(kDTypeInfo[i].name);
  }
  fail("dtype", "unknown dtype '{}'; expected one of {}", name, known);
}

std::uint16_t float_to_f16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = mantissa * 2^-24, rounded to nearest even.
    if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
    const std::uint32_t exponent = abs >> 23;
    const std::uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t rshift = 126u - exponent;  // half = mantissa * 2^(exponent - 126)
    std::uint32_t half = mantissa >> rshift;
    const std::uint32_t rest = mantissa & ((1u << rshift) - 1u);
    const std::uint32_t halfway = 1u << (rshift - 1u);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  // Normal: rebias exponent 127 -> 15 and round the mantissa from 23 to 10 bits.
  std::uint32_t half = ((abs - 0x38000000u) >> 13);
  const std::uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: correct
  return static_cast<std::uint16_t>(sign | half);
}

float f16_to_float(std::uint16_t value) {
  const std::uint32_t sign = static_cast<std::uint32_t>(value & 0x8000u) << 16;
  const std::uint32_t exponent = (value >> 10) & 0x1fu;
  std::uint32_t mantissa = value & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      std::uint32_t e = 113;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        --e;
      }
      bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

}  // namespace loracpp
