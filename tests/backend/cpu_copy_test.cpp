// The CPU strided copy against index arithmetic: every permutation of a 4-D block and 2-D
// transposes, for each element size it moves directly (2, 4, 8 bytes) and one it copies bytewise.
#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

// Copies src (contiguous, `shape`) permuted by `order` into a contiguous dst and checks every
// element against the one index arithmetic names.
void expect_permuted_copy(const std::vector<i64>& shape, const std::vector<int>& order, std::size_t element) {
  const int rank = static_cast<int>(shape.size());
  std::vector<i64> src_strides(shape.size()), out_shape(shape.size()), in_strides(shape.size());
  i64 stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    src_strides[static_cast<std::size_t>(d)] = stride;
    stride *= shape[static_cast<std::size_t>(d)];
  }
  for (int d = 0; d < rank; ++d) {  // the view: dim d of the output is dim order[d] of the source
    out_shape[static_cast<std::size_t>(d)] = shape[static_cast<std::size_t>(order[static_cast<std::size_t>(d)])];
    in_strides[static_cast<std::size_t>(d)] = src_strides[static_cast<std::size_t>(order[static_cast<std::size_t>(d)])];
  }
  std::vector<i64> dst_strides(shape.size());
  stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    dst_strides[static_cast<std::size_t>(d)] = stride;
    stride *= out_shape[static_cast<std::size_t>(d)];
  }
  const i64 count = stride;
  std::vector<unsigned char> src(static_cast<std::size_t>(count) * element), dst(src.size(), 0);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 7 + i / 251);
  copy_strided(src.data(), in_strides.data(), dst.data(), dst_strides.data(), out_shape.data(), rank, element);
  std::vector<i64> index(shape.size(), 0);
  for (i64 flat = 0; flat < count; ++flat) {
    i64 rest = flat, from = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const auto u = static_cast<std::size_t>(d);
      from += rest % out_shape[u] * in_strides[u];
      rest /= out_shape[u];
    }
    ASSERT_EQ(std::memcmp(dst.data() + flat * static_cast<i64>(element), src.data() + from * static_cast<i64>(element),
                          element),
              0)
        << "element " << flat << " of a copy with element size " << element;
  }
}

TEST(CpuCopy, EveryPermutationOfAFourDimensionalBlock) {
  for (const std::size_t element : {2u, 4u, 8u, 3u}) {
    std::vector<int> order{0, 1, 2, 3};
    do {
      expect_permuted_copy({2, 3, 4, 5}, order, element);
    } while (std::next_permutation(order.begin(), order.end()));
  }
}

TEST(CpuCopy, TransposesAndLowerRanks) {
  for (const std::size_t element : {2u, 4u, 8u, 3u}) {
    expect_permuted_copy({16, 37}, {1, 0}, element);  // a LoRA backward's [n, r] -> [r, n]
    expect_permuted_copy({16, 37}, {0, 1}, element);
    expect_permuted_copy({9}, {0}, element);
    expect_permuted_copy({}, {}, element);
  }
}

// Copies above the size the threads share: rows moved whole (attention's head split), elements one
// by one (a transpose, a permute with the innermost dim moved), and a copy between equal dtypes.
TEST(CpuCopy, LargeCopiesSharedByTheThreads) {
  for (const std::size_t element : {2u, 4u}) {
    expect_permuted_copy({2, 256, 12, 64}, {0, 2, 1, 3}, element);
    expect_permuted_copy({700, 390}, {1, 0}, element);
    expect_permuted_copy({3, 200, 300}, {0, 2, 1}, element);
  }
  std::vector<float> src(300001), dst(src.size(), 0.0f);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) * 0.5f;
  convert(src.data(), DType::f32, dst.data(), DType::f32, static_cast<i64>(src.size()));
  EXPECT_EQ(dst, src);
}

}  // namespace
}  // namespace loracpp::backend::cpu
