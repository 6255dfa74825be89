#pragma once
// q4_0, GGUF's 4-bit block format: each run of 32 consecutive values is stored as one f16 scale d
// followed by 16 bytes of 4-bit codes. Byte j holds value j in its low four bits and value j + 16
// in its high four; a code c stands for (c - 8) * d. The layout is the file format's, byte for
// byte, so that blocks read from a GGUF file and blocks written here are the same thing.
#include <cstddef>
#include <cstdint>

namespace loracpp::q4_0 {

constexpr std::int64_t kBlock = 32;       // values per block
constexpr std::size_t kBlockBytes = 18;   // 2 (f16 scale) + 16 (two codes a byte)

// Quantises n values (a multiple of 32) into n / 32 blocks, as llama.cpp's reference quantiser
// does: the value of largest magnitude, v, sets d = v / -8, so that v becomes code 0 exactly; each
// value becomes floor(x / d + 8.5) capped at 15, with the f32 d (d is stored in f16).
void quantize(const float* x, void* blocks, std::int64_t n);
// Widens n values (a multiple of 32) from n / 32 blocks to (c - 8) * d.
void dequantize(const void* blocks, float* x, std::int64_t n);

}  // namespace loracpp::q4_0
