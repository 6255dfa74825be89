// q4_0, GGUF's 4-bit blocks: the bytes follow the format (an f16 scale d, the block's value of
// largest magnitude over -8, then two codes a byte: value j in the low four bits of byte j, value
// j + 16 in the high four), codes widen to (c - 8) d, quantising widened values again gives the same
// bytes (so a GGUF file's blocks survive a round trip through f32), and the dtype's sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/blocks.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/q4_0.h"
#include "core/random.h"
#include "core/tensor.h"
#include "ops/ops.h"

namespace loracpp {
namespace {

std::vector<std::uint8_t> quantized(const std::vector<float>& x) {
  std::vector<std::uint8_t> blocks(dtype_bytes(DType::q4_0, static_cast<std::int64_t>(x.size())));
  q4_0::quantize(x.data(), blocks.data(), static_cast<std::int64_t>(x.size()));
  return blocks;
}

float scale_of(const std::vector<std::uint8_t>& blocks, std::size_t block) {
  std::uint16_t d;
  std::memcpy(&d, blocks.data() + block * 18, 2);
  return f16_to_float(d);
}

TEST(Q4_0, BlockBytesFollowTheFormat) {
  std::vector<float> x(32, 0.0f);
  x[0] = -1.0f;      // the largest magnitude: d = -1 / -8 = 0.125, and x[0] is code 0
  x[1] = 0.5f;       // 4 steps up: code 12
  x[2] = 0.9f;       // 7.2 steps: code 15 (7.2 + 8.5, truncated)
  x[3] = -0.3f;      // -2.4 steps: code 6
  x[16] = 0.0625f;   // half a step: rounded up, code 9
  x[17] = -0.0625f;  // minus half a step: rounded up, code 8
  const auto blocks = quantized(x);
  ASSERT_EQ(blocks.size(), 18u);
  EXPECT_EQ(scale_of(blocks, 0), 0.125f);
  EXPECT_EQ(blocks[2], 0x90);  // codes 0 (low) and 9 (high)
  EXPECT_EQ(blocks[3], 0x8c);  // 12 and 8
  EXPECT_EQ(blocks[4], 0x8f);  // 15 and 8 (a zero)
  EXPECT_EQ(blocks[5], 0x86);  // 6 and 8
  for (std::size_t i = 6; i < 18; ++i) EXPECT_EQ(blocks[i], 0x88) << i;
}

TEST(Q4_0, APositiveLargestValueGivesANegativeScale) {
  std::vector<float> x(32, 0.0f);
  x[5] = 2.0f;    // the largest magnitude, first: d = -0.25, code 0
  x[6] = 1.0f;    // code 4
  x[7] = -2.0f;   // as large, but 16 steps up is past the last code: capped at 15, -1.75
  const auto blocks = quantized(x);
  EXPECT_EQ(scale_of(blocks, 0), -0.25f);
  std::vector<float> widened(32);
  q4_0::dequantize(blocks.data(), widened.data(), 32);
  EXPECT_EQ(widened[5], 2.0f);
  EXPECT_EQ(widened[6], 1.0f);
  EXPECT_EQ(widened[7], -1.75f);
  EXPECT_EQ(widened[0], 0.0f);
}

TEST(Q4_0, CodesWidenToCodeMinusEightTimesD) {
  std::vector<std::uint8_t> blocks(36, 0x88);
  const std::uint16_t d0 = float_to_f16(0.5f), d1 = float_to_f16(-0.25f);
  std::memcpy(blocks.data(), &d0, 2);
  std::memcpy(blocks.data() + 18, &d1, 2);
  blocks[2] = 0xf0;   // value 0: code 0; value 16: code 15
  blocks[17] = 0x3a;  // value 15: code 10; value 31: code 3
  blocks[20] = 0x01;  // block 1, value 0: code 1; value 16: code 0
  std::vector<float> x(64, 1.0f);
  q4_0::dequantize(blocks.data(), x.data(), 64);
  EXPECT_EQ(x[0], -4.0f);
  EXPECT_EQ(x[16], 3.5f);
  EXPECT_EQ(x[15], 1.0f);
  EXPECT_EQ(x[31], -2.5f);
  EXPECT_EQ(x[32], 1.75f);
  EXPECT_EQ(x[48], 2.0f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[63], 0.0f);
}

TEST(Q4_0, AnAllZeroBlockWidensToZero) {
  const auto blocks = quantized(std::vector<float>(32, 0.0f));
  EXPECT_EQ(scale_of(blocks, 0), 0.0f);
  std::vector<float> widened(32, 1.0f);
  q4_0::dequantize(blocks.data(), widened.data(), 32);
  for (const float v : widened) EXPECT_EQ(v, 0.0f);
}

TEST(Q4_0, ErrorIsWithinHalfAStepAndRequantisingGivesTheSameBytes) {
  Rng rng(7);
  std::vector<float> x(32 * 40);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.normal() * (i % 64 < 32 ? 0.02f : 3.0f);
  const auto blocks = quantized(x);
  std::vector<float> widened(x.size());
  q4_0::dequantize(blocks.data(), widened.data(), static_cast<std::int64_t>(x.size()));
  int capped = 0;
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    float largest = 0;
    for (std::size_t i = 0; i < 32; ++i)
      if (std::abs(x[b * 32 + i]) > std::abs(largest)) largest = x[b * 32 + i];
    const float step = std::abs(largest) / 8.0f;
    // The codes reach 8 steps on the largest value's side and 7 on the other: a value past 7.5
    // steps there is capped at the last code, within one step; any other is within half a step.
    // Both plus what the scale's f16 rounding (2^-11 relative) moves a code 8 steps from zero.
    for (std::size_t i = 0; i < 32; ++i) {
      const float v = x[b * 32 + i], error = std::abs(widened[b * 32 + i] - v);
      const bool past_last_code = v * largest < 0 && std::abs(v) > 7.5f * step;
      capped += past_last_code;
      EXPECT_LE(error, step * ((past_last_code ? 1.0f : 0.5f) + 8.0f / 2048.0f)) << b << ", " << i;
    }
  }
  EXPECT_GT(capped, 0);  // the random values reach the capped case
  EXPECT_EQ(quantized(widened), blocks);
}

TEST(Q4_0, DTypeSizesAndTheBlockCalls) {
  EXPECT_EQ(dtype_block(DType::q4_0), 32);
  EXPECT_TRUE(is_block_dtype(DType::q4_0));
  EXPECT_EQ(dtype_bytes(DType::q4_0, 96), 54u);
  EXPECT_EQ(parse_dtype("q4_0"), DType::q4_0);
  EXPECT_THROW(dtype_size(DType::q4_0), Error);
  // quantize_blocks and dequantize_blocks are the format's own calls
  const std::vector<float> x = {0.3f, -1.2f, 0.7f, 0.05f, 1.1f, -0.4f, 0.0f, 0.9f, -0.8f, 0.2f, 0.6f,
                                -0.1f, 0.4f, -0.9f, 1.0f, -0.6f, 0.1f, 0.8f, -0.3f, 0.5f, -0.7f, 1.2f,
                                -1.0f, 0.35f, -0.25f, 0.45f, -0.55f, 0.65f, -0.75f, 0.85f, -0.95f, 0.15f};
  std::vector<std::uint8_t> blocks(18);
  quantize_blocks(DType::q4_0, x.data(), blocks.data(), 32);
  EXPECT_EQ(blocks, quantized(x));
  std::vector<float> a(32), b(32);
  dequantize_blocks(DType::q4_0, blocks.data(), a.data(), 32);
  q4_0::dequantize(blocks.data(), b.data(), 32);
  EXPECT_EQ(a, b);
  try {
    quantize_blocks(DType::bf16, x.data(), blocks.data(), 32);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[dtype] bf16 has no blocks to quantise into");
  }
  const Tensor w = Tensor::from_floats(x, {1, 32}, DType::q4_0);
  EXPECT_EQ(w.storage()->nbytes(), 18u);
  EXPECT_EQ(w.to_floats(), a);
}

// One block format converts to the other through f32 (a Q4_0 file's output layer taking q8_0 under
// store_weights, say): the q8_0 blocks of the q4_0 blocks' widened values.
TEST(Q4_0, ConvertsToQ8_0ThroughF32) {
  Rng rng(9);
  std::vector<float> x(64 * 3);
  for (auto& v : x) v = rng.normal();
  const Tensor q4 = Tensor::from_floats(x, {3, 64}, DType::q4_0);
  const Tensor q8 = ops::to_dtype(q4, DType::q8_0);
  EXPECT_EQ(q8.dtype(), DType::q8_0);
  EXPECT_EQ(q8.to_floats(), Tensor::from_floats(q4.to_floats(), {3, 64}, DType::q8_0).to_floats());
  EXPECT_EQ(ops::to_dtype(q8, DType::q4_0).dtype(), DType::q4_0);
}

}  // namespace
}  // namespace loracpp
