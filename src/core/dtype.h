#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace loracpp {

// X(name, values per block, bytes per block, is floating point). Every dtype table derives from
// this list. Most dtypes store each value alone (a block of one). q8_0 and q4_0 are GGUF's block
// formats, 32 weights sharing one f16 scale as int8 (core/q8_0.h) or as 4-bit codes (core/q4_0.h):
// a tensor of them is a frozen weight's whole matrix, read only by the products and conversions
// that know its blocks (core/blocks.h).
#define LORACPP_DTYPES(X) \
  X(f32, 1, 4, true)      \
  X(bf16, 1, 2, true)     \
  X(f16, 1, 2, true)      \
  X(i32, 1, 4, false)     \
  X(i64, 1, 8, false)     \
  X(q8_0, 32, 34, true)   \
  X(q4_0, 32, 18, true)

enum class DType : std::uint8_t {
#define LORACPP_DTYPE_ENUM(name, block, bytes, floating) name,
  LORACPP_DTYPES(LORACPP_DTYPE_ENUM)
#undef LORACPP_DTYPE_ENUM
};

// Bytes of one value; throws for a block dtype (q8_0, q4_0), whose values have no size of their own.
std::size_t dtype_size(DType dtype);
// Values per block: 1, or 32 for q8_0 and q4_0.
std::int64_t dtype_block(DType dtype);
bool is_block_dtype(DType dtype);
// Bytes that numel values take; throws when they do not fill whole blocks.
std::size_t dtype_bytes(DType dtype, std::int64_t numel);
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

// An f16 value in the two bytes at `at` (any alignment, as in a block's scale), and the reverse.
inline float load_f16(const void* at) {
  std::uint16_t bits;
  std::memcpy(&bits, at, 2);
  return f16_to_float(bits);
}
inline void store_f16(void* at, float value) {
  const std::uint16_t bits = float_to_f16(value);
  std::memcpy(at, &bits, 2);
}

}  // namespace loracpp
