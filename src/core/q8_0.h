#pragma once
// q8_0, GGUF's 8-bit block format: each run of 32 consecutive values is stored as one f16 scale d
// followed by 32 int8 q, and stands for q * d. The layout is the file format's, byte for byte, so
// that blocks read from a GGUF file and blocks written here are the same thing.
#include <cstddef>
#include <cstdint>

namespace loracpp::q8_0 {

constexpr std::int64_t kBlock = 32;       // values per block
constexpr std::size_t kBlockBytes = 34;   // 2 (f16 scale) + 32 (int8 values)

// Quantises n values (a multiple of 32) into n / 32 blocks. The scale is the block's largest
// magnitude over 127, stored in f16; each value is rounded to the nearest multiple of the f32
// scale (halves away from zero), so the largest one becomes +-127.
void quantize(const float* x, void* blocks, std::int64_t n);
// Widens n values (a multiple of 32) from n / 32 blocks to q * d.
void dequantize(const void* blocks, float* x, std::int64_t n);

}  // namespace loracpp::q8_0
