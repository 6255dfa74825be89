#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace loracpp {

// X(name, storage type, bytes, is floating point). Every dtype table derives from this list.
#define LORACPP_DTYPES(X)        \
  X(f32, float, 4, true)         \
  X(bf16, std::uint16_t, 2, true) \
  X(f16, std::uint16_t, 2, true)  \
  X(i32, std::int32_t, 4, false)  \
  X(i64, std::int64_t, 8, false)

enum class DType : std::uint8_t {
#define LORACPP_DTYPE_ENUM(name, type, bytes, floating) name,
  LORACPP_DTYPES(LORACPP_DTYPE_ENUM)
#undef LORACPP_DTYPE_ENUM
};

std::size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);
bool is_floating(DType dtype);
// Parses "f32", "bf16", ...; throws on an unknown name, listing the known ones.
DType parse_dtype(std::string_view name);

// bf16 is the upper half of an f32; rounding is to nearest, ties to even, NaN kept NaN.
inline std::uint16_t float_to_bf16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

inline float bf16_to_float(std::uint16_t value) {
  std::uint32_t bits = static_cast<std::uint32_t>(value) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// IEEE 754 binary16, round to nearest even, with subnormals, infinities and NaN.
std::uint16_t float_to_f16(float value);
float f16_to_float(std::uint16_t value);

}  // namespace loracpp
