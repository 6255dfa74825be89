#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp {
namespace {

using namespace ops;

std::vector<float> iota(std::int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return v;
}

TEST(Tensor, ZerosAreContiguousAndZero) {
  const Tensor t = Tensor::zeros({2, 3}, DType::bf16);
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_floats(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(t.device(), Device::cpu);
}

TEST(Tensor, ViewsShareStorageWithoutCopies) {
  const Tensor x = Tensor::from_floats(iota(24), {2, 3, 4});
  const Tensor t = transpose(x, 0, 2);
  const Tensor p = permute(x, {1, 2, 0});
  const Tensor s = slice(x, 2, 1, 3);
  const Tensor r = reshape(x, {6, 4});
  const Tensor b = broadcast_to(slice(x, 0, 0, 1), {5, 3, 4});
  for (const Tensor* v : {&t, &p, &s, &r, &b}) EXPECT_EQ(v->storage(), x.storage());
  EXPECT_EQ(t.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(t.strides(), (Shape{1, 4, 12}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(s.to_floats(), (std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22}));
  EXPECT_EQ(transpose(reshape(x, {6, 4}), 0, 1).to_floats()[1], 4.0f);
  EXPECT_EQ(b.strides()[0], 0);
}

TEST(Tensor, ContiguousCopiesOnlyWhenNeeded) {
  const Tensor x = Tensor::from_floats(iota(6), {2, 3});
  const Tensor same = contiguous(x);
  EXPECT_EQ(same.storage(), x.storage());
  const Tensor copied = contiguous(transpose(x, 0, 1));
  EXPECT_NE(copied.storage(), x.storage());
  EXPECT_TRUE(copied.is_contiguous());
  EXPECT_EQ(copied.to_floats(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  // Reshaping a non-contiguous view has to copy.
  EXPECT_EQ(reshape(transpose(x, 0, 1), {6}).to_floats(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, DTypeConversionsRoundTrip) {
  const std::vector<float> values{1.5f, -2.25f, 0.0f, 1024.0f};
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    const Tensor t = to_dtype(Tensor::from_floats(values, {4}), dtype);
    EXPECT_EQ(t.dtype(), dtype);
    EXPECT_EQ(to_dtype(t, DType::f32).to_floats(), values) << dtype_name(dtype);
  }
  const Tensor ints = to_dtype(Tensor::from_floats(values, {4}), DType::i32);
  EXPECT_EQ(ints.to_ints(), (std::vector<std::int64_t>{1, -2, 0, 1024}));
  EXPECT_EQ(to_dtype(ints, DType::i64).dtype(), DType::i64);
}

class TempFile {
 public:
  explicit TempFile(const std::vector<float>& values) {
    path_ = std::filesystem::temp_directory_path() / ("loracpp_tensor_test_" + std::to_string(::getpid()));
    std::ofstream out(path_, std::ios::binary);
    out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(Storage, MemoryMappedFileIsReadOnlyAndUsedInPlace) {
  const TempFile file(iota(10));
  const auto storage = Storage::map_file(file.path());
  EXPECT_TRUE(storage->read_only());
  const Tensor t = Tensor::from_storage(storage, 8, {2, 4}, DType::f32);  // skips two floats
  EXPECT_EQ(t.raw_data(), storage->data() + 8);
  EXPECT_EQ(t.to_floats(), (std::vector<float>{2, 3, 4, 5, 6, 7, 8, 9}));
  Tensor writable = t;
  EXPECT_TRUE(testing::throws_with_prefix([&] { writable.mutable_data<float>(); }, "[storage] this storage is a read-only"));
  // Ops read mapped tensors in place and write their results elsewhere.
  EXPECT_EQ(sum(t).item(), 44.0f);
}

TEST(Storage, OutOfBoundsViewsAreRefused) {
  const TempFile file(iota(4));
  const auto storage = Storage::map_file(file.path());
  EXPECT_TRUE(testing::throws_with_prefix([&] { Tensor::from_storage(storage, 8, {3}, DType::f32); },
                                          "[tensor] a f32 tensor of shape [3] at byte 8 needs 12 bytes but the storage has 16"));
  const Tensor t = Tensor::from_storage(storage, 0, {4}, DType::f32);
  EXPECT_TRUE(testing::throws_with_prefix([&] { t.as_strided({3}, {2}, 0); }, "[tensor] view of shape [3]"));
  EXPECT_TRUE(testing::throws_with_prefix([] { Storage::map_file("/nonexistent/model.bin"); },
                                          "[storage] cannot open /nonexistent/model.bin"));
}

// Blocks of 2 MiB and more are mapped on their own (aligned for huge pages); from 64 KiB up,
// freed blocks are kept for the next allocation of their size; small ones come from malloc. Each is zero-filled when asked,
// holds what is written to the last byte, and goes back to the system on release.
TEST(Storage, LargeAndSmallBlocksAreZeroedWritableAndReused) {
  for (const std::size_t nbytes :
       {std::size_t{1000}, std::size_t{200001}, std::size_t{3} << 20, (std::size_t{5} << 20) + 12345}) {
    for (int round = 0; round < 2; ++round) {  // the second round takes the first one's freed block
      const auto storage = Storage::allocate(nbytes);
      ASSERT_EQ(storage->nbytes(), nbytes);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(storage->data()) % 64, 0u);
      std::byte* bytes = storage->mutable_data();
      std::size_t nonzero = 0;
      for (std::size_t i = 0; i < nbytes; ++i) nonzero += bytes[i] != std::byte{0};
      EXPECT_EQ(nonzero, 0u) << nbytes << " bytes, round " << round;
      for (std::size_t i = 0; i < nbytes; ++i) bytes[i] = static_cast<std::byte>(i * 7 + 1);
      EXPECT_EQ(bytes[nbytes - 1], static_cast<std::byte>((nbytes - 1) * 7 + 1));
    }
  }
  Storage::release_cached_blocks();
  const auto again = Storage::allocate(std::size_t{3} << 20);
  EXPECT_EQ(again->data()[(std::size_t{3} << 20) - 1], std::byte{0});
}

TEST(Tensor, RandomTensorsDependOnlyOnTheSeed) {
  Rng a(42), b(42), c(43);
  EXPECT_EQ(randn({5}, a).to_floats(), randn({5}, b).to_floats());
  EXPECT_NE(randn({5}, a).to_floats(), randn({5}, c).to_floats());
}

}  // namespace
}  // namespace loracpp
