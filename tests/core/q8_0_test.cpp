// q8_0, GGUF's 8-bit blocks: the bytes follow the format (an f16 scale, the block's largest
// magnitude over 127, then 32 int8 values rounded halves away from zero), values widen to q * d,
// quantising widened values again gives the same bytes (so a GGUF file's blocks survive a
// round trip through f32), and a q8_0 tensor is seen only whole or transposed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/q8_0.h"
#include "core/random.h"
#include "core/tensor.h"

namespace loracpp {
namespace {

std::vector<std::uint8_t> quantized(const std::vector<float>& x) {
  std::vector<std::uint8_t> blocks(dtype_bytes(DType::q8_0, static_cast<std::int64_t>(x.size())));
  q8_0::quantize(x.data(), blocks.data(), static_cast<std::int64_t>(x.size()));
  return blocks;
}

std::vector<float> random_values(std::int64_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.normal() * (i % 64 < 32 ? 0.02f : 3.0f);
  return x;
}

TEST(Q8_0, BlockBytesFollowTheFormat) {
  std::vector<float> x(32, 0.0f);
  x[0] = -1.0f;   // the largest magnitude: -127
  x[1] = 0.5f;    // 63.5: a half, rounded away from zero
  x[2] = 0.25f;   // 31.75
  x[3] = -0.5f;   // -63.5
  const auto blocks = quantized(x);
  ASSERT_EQ(blocks.size(), 34u);
  std::uint16_t d;
  std::memcpy(&d, blocks.data(), 2);
  EXPECT_EQ(d, float_to_f16(1.0f / 127.0f));
  EXPECT_EQ(static_cast<std::int8_t>(blocks[2]), -127);
  EXPECT_EQ(static_cast<std::int8_t>(blocks[3]), 64);
  EXPECT_EQ(static_cast<std::int8_t>(blocks[4]), 32);
  EXPECT_EQ(static_cast<std::int8_t>(blocks[5]), -64);
  for (std::size_t i = 6; i < 34; ++i) EXPECT_EQ(blocks[i], 0) << i;
}

TEST(Q8_0, ValuesWidenToQTimesD) {
  std::vector<std::uint8_t> blocks(68, 0);
  const std::uint16_t d0 = float_to_f16(0.5f), d1 = float_to_f16(-0.25f);
  std::memcpy(blocks.data(), &d0, 2);
  std::memcpy(blocks.data() + 34, &d1, 2);
  blocks[2] = static_cast<std::uint8_t>(std::int8_t{-3});
  blocks[33] = 100;
  blocks[36] = 7;
  std::vector<float> x(64, 1.0f);
  q8_0::dequantize(blocks.data(), x.data(), 64);
  EXPECT_EQ(x[0], -1.5f);
  EXPECT_EQ(x[31], 50.0f);
  EXPECT_EQ(x[32], -1.75f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[63], 0.0f);
}

TEST(Q8_0, AnAllZeroBlockStaysZero) {
  const auto blocks = quantized(std::vector<float>(32, 0.0f));
  for (const auto byte : blocks) EXPECT_EQ(byte, 0);
}

TEST(Q8_0, ErrorIsWithinHalfAStepAndRequantisingGivesTheSameBytes) {
  const auto x = random_values(32 * 40, 7);
  const auto blocks = quantized(x);
  std::vector<float> widened(x.size());
  q8_0::dequantize(blocks.data(), widened.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b * 32 + i]));
    // half a step, plus what the scale's f16 rounding (2^-11 relative) moves the largest q
    for (std::size_t i = 0; i < 32; ++i)
      EXPECT_LE(std::abs(widened[b * 32 + i] - x[b * 32 + i]), amax / 127.0f * (0.5f + 127.0f / 2048.0f)) << b;
  }
  EXPECT_EQ(quantized(widened), blocks);
}

TEST(Q8_0, DTypeSizesAreBlocks) {
  EXPECT_EQ(dtype_block(DType::q8_0), 32);
  EXPECT_TRUE(is_block_dtype(DType::q8_0));
  EXPECT_FALSE(is_block_dtype(DType::bf16));
  EXPECT_EQ(dtype_bytes(DType::q8_0, 96), 102u);
  EXPECT_EQ(dtype_bytes(DType::bf16, 3), 6u);
  EXPECT_EQ(parse_dtype("q8_0"), DType::q8_0);
  EXPECT_THROW(dtype_size(DType::q8_0), Error);
  try {
    dtype_bytes(DType::q8_0, 40);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[dtype] q8_0 stores blocks of 32 values; 40 values do not fill whole blocks");
  }
}

TEST(Q8_0, TensorIsSeenWholeOrTransposed) {
  const auto x = random_values(3 * 64, 11);
  const Tensor w = Tensor::from_floats(x, {3, 64}, DType::q8_0);
  EXPECT_EQ(w.dtype(), DType::q8_0);
  EXPECT_EQ(w.storage()->nbytes(), 3u * 2u * 34u);
  std::vector<float> widened(x.size());
  q8_0::dequantize(w.raw_data(), widened.data(), static_cast<std::int64_t>(x.size()));
  EXPECT_EQ(w.to_floats(), widened);
  const Tensor t = w.as_strided({64, 3}, {1, 64}, w.byte_offset());
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.shape(), (Shape{64, 3}));
  try {
    w.as_strided({2, 64}, {64, 1}, w.byte_offset());
    FAIL() << "a slice of rows was allowed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("can only be viewed whole (transposed)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(w.data<float>(), Error);
  EXPECT_THROW(Tensor::from_floats(std::vector<float>(40), {1, 40}, DType::q8_0), Error);
}

}  // namespace
}  // namespace loracpp
