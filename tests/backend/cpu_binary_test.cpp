// The CPU element-wise binary kernel against index arithmetic, for each op and each way it reads
// its operands: both dense (and in place), a row of each, a row and a broadcast scalar, and
// strided reads; shapes large enough that the threaded loops run. Each element is checked against
// the op's scalar definition (apply_binary): what is tested is how the kernel reads and writes.
#include <array>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "test_util.h"

namespace loracpp::backend::cpu {
namespace {

constexpr std::array kOps{BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div};

// out [rows, cols] = a op b, a and b read through the given strides from buffers of their own.
void expect_binary(i64 rows, i64 cols, std::array<i64, 2> a_strides, std::array<i64, 2> b_strides) {
  const auto extent = [&](const std::array<i64, 2>& s) { return (rows - 1) * s[0] + (cols - 1) * s[1] + 1; };
  std::vector<float> a(static_cast<std::size_t>(extent(a_strides))), b(static_cast<std::size_t>(extent(b_strides)));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = 0.25f * static_cast<float>(i % 97) - 3.0f;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = 0.5f + 0.125f * static_cast<float>(i % 13);
  const i64 shape[] = {rows, cols};
  for (BinaryOp op : kOps) {
    std::vector<float> out(static_cast<std::size_t>(rows * cols), -1.0f);
    binary(op, a.data(), a_strides.data(), b.data(), b_strides.data(), out.data(), shape, 2);
    for (i64 r = 0; r < rows; ++r)
      for (i64 c = 0; c < cols; ++c) {
        const float want = apply_binary(op, a[static_cast<std::size_t>(r * a_strides[0] + c * a_strides[1])],
                                        b[static_cast<std::size_t>(r * b_strides[0] + c * b_strides[1])]);
        ASSERT_EQ(out[static_cast<std::size_t>(r * cols + c)], want)
            << "op " << static_cast<int>(op) << " at [" << r << ", " << c << "]";
      }
  }
}

TEST(CpuBinary, DenseOperands) { expect_binary(300, 257, {257, 1}, {257, 1}); }

TEST(CpuBinary, RowAgainstBroadcastRow) { expect_binary(300, 257, {257, 1}, {0, 1}); }  // a bias

TEST(CpuBinary, RowAgainstBroadcastScalar) { expect_binary(300, 257, {257, 1}, {1, 0}); }  // a per-row factor

TEST(CpuBinary, PaddedRowsAndStridedColumns) {
  expect_binary(300, 257, {260, 1}, {300, 1});   // rows of each, with gaps between them
  expect_binary(300, 257, {1, 300}, {257, 1});   // a read transposed
  expect_binary(300, 257, {0, 2}, {1, 0});       // both broadcast, a every other element
}

TEST(CpuBinary, DenseInPlace) {
  const i64 n = 200003, shape[] = {n}, strides[] = {1};
  for (BinaryOp op : kOps) {
    std::vector<float> acc(static_cast<std::size_t>(n)), x(acc.size()), want(acc.size());
    for (std::size_t i = 0; i < acc.size(); ++i) {
      acc[i] = static_cast<float>(i % 31) - 15.0f;
      x[i] = 1.0f + static_cast<float>(i % 7);
      want[i] = apply_binary(op, acc[i], x[i]);
    }
    binary(op, acc.data(), strides, x.data(), strides, acc.data(), shape, 1);
    ASSERT_EQ(acc, want) << "op " << static_cast<int>(op);
  }
}

}  // namespace
}  // namespace loracpp::backend::cpu
