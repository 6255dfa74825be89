#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"
#include "core/error.h"
#include "core/blocks.h"
#include "core/tensor.h"

namespace loracpp::backend::cpu {

namespace {

// Bytes above which a copy is shared by the threads. A copy made by the calling thread alone keeps
// the others waiting: in a tiny training step the second thread spent 9% of its time waiting for
// the first one's serial work, large copies among it.
constexpr i64 kThreadedCopyBytes = i64{1} << 18;

template <class Load>
void store_all(Load load, void* dst, DType dst_dtype, i64 n) {
  switch (dst_dtype) {
    case DType::f32: {
      auto* out = static_cast<float*>(dst);
#pragma omp parallel for if (n > 65536)
      for (i64 i = 0; i < n; ++i) out[i] = static_cast<float>(load(i));
      return;
    }
    case DType::bf16: {
      auto* out = static_cast<std::uint16_t*>(dst);
#pragma omp parallel for if (n > 65536)
      for (i64 i = 0; i < n; ++i) out[i] = float_to_bf16(static_cast<float>(load(i)));
      return;
    }
    case DType::f16: {
      auto* out = static_cast<std::uint16_t*>(dst);
#pragma omp parallel for if (n > 65536)
      for (i64 i = 0; i < n; ++i) out[i] = float_to_f16(static_cast<float>(load(i)));
      return;
    }
    case DType::i32: {
      auto* out = static_cast<std::int32_t*>(dst);
      for (i64 i = 0; i < n; ++i) out[i] = static_cast<std::int32_t>(load(i));
      return;
    }
    case DType::i64: {
      auto* out = static_cast<std::int64_t*>(dst);
      for (i64 i = 0; i < n; ++i) out[i] = static_cast<std::int64_t>(load(i));
      return;
    }
    case DType::q8_0:
    case DType::q4_0: return;  // blocks: convert_blocks
  }
}

// An element-by-element strided copy: a 2-D one (a transpose, as the LoRA backward makes) as a
// plain double loop, a deeper one over the offsets of its leading dimensions; rows or planes are
// shared by the threads when the copy is large.
template <class T>
void copy_elements(const T* in, const i64* src_strides, T* out, const i64* dst_strides, const Shape& dims) {
  const int rank = static_cast<int>(dims.size());
  if (rank == 0) {
    out[0] = in[0];
    return;
  }
  const i64 rows = rank >= 2 ? dims[rank - 2] : 1, cols = dims[rank - 1];
  const i64 s_row = rank >= 2 ? src_strides[rank - 2] : 0, s_col = src_strides[rank - 1];
  const i64 d_row = rank >= 2 ? dst_strides[rank - 2] : 0, d_col = dst_strides[rank - 1];
  auto row = [&](const T* from, T* to, i64 i) {
    for (i64 j = 0; j < cols; ++j) to[i * d_row + j * d_col] = from[i * s_row + j * s_col];
  };
  auto plane = [&](const T* from, T* to) {
    for (i64 i = 0; i < rows; ++i) row(from, to, i);
  };
  const bool threaded = shape_numel(dims) * static_cast<i64>(sizeof(T)) > kThreadedCopyBytes;
  if (rank <= 2) {
#pragma omp parallel for if (threaded)
    for (i64 i = 0; i < rows; ++i) row(in, out, i);
    return;
  }
  const Shape outer(dims.begin(), dims.end() - 2);
  std::vector<i64> src_at, dst_at;
  for_each_offset(outer, Shape(src_strides, src_strides + rank - 2), [&](i64 o) { src_at.push_back(o); });
  for_each_offset(outer, Shape(dst_strides, dst_strides + rank - 2), [&](i64 o) { dst_at.push_back(o); });
#pragma omp parallel for if (threaded)
  for (i64 k = 0; k < static_cast<i64>(src_at.size()); ++k) plane(in + src_at[k], out + dst_at[k]);
}

}  // namespace

// Blocks (q8_0, q4_0) to or from f32 or bf16, a share of the blocks per thread.
void convert_blocks(const void* src, DType src_dtype, void* dst, DType dst_dtype, i64 n) {
  const bool to_blocks = is_block_dtype(dst_dtype);
  const DType blocks_dtype = to_blocks ? dst_dtype : src_dtype, other = to_blocks ? src_dtype : dst_dtype;
  const i64 block = dtype_block(blocks_dtype);
  check(n % block == 0, "convert", "{} converts whole blocks of {} values, got {} values", dtype_name(blocks_dtype),
        block, n);
  check(other == DType::f32 || other == DType::bf16, "convert", "{} converts to and from f32 or bf16, not {}",
        dtype_name(blocks_dtype), dtype_name(other));
  const i64 kPiece = 64 * block;  // values per piece of work
  const auto piece_blocks = [blocks_dtype](i64 start) { return dtype_bytes(blocks_dtype, start); };
#pragma omp parallel
  {
    std::vector<float> values(other == DType::f32 ? 0 : kPiece);
#pragma omp for
    for (i64 start = 0; start < n; start += kPiece) {
      const i64 count = std::min(kPiece, n - start);
      if (to_blocks) {
        auto* blocks = static_cast<std::uint8_t*>(dst) + piece_blocks(start);
        if (other == DType::f32) {
          quantize_blocks(blocks_dtype, static_cast<const float*>(src) + start, blocks, count);
        } else {
          const auto* in = static_cast<const std::uint16_t*>(src) + start;
          for (i64 i = 0; i < count; ++i) values[static_cast<std::size_t>(i)] = bf16_to_float(in[i]);
          quantize_blocks(blocks_dtype, values.data(), blocks, count);
        }
      } else {
        const auto* blocks = static_cast<const std::uint8_t*>(src) + piece_blocks(start);
        float* to = other == DType::f32 ? static_cast<float*>(dst) + start : values.data();
        dequantize_blocks(blocks_dtype, blocks, to, count);
        if (other == DType::bf16) to_bf16(to, static_cast<std::uint16_t*>(dst) + start, count);
      }
    }
  }
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, i64 n) {
  if (is_block_dtype(src_dtype) || is_block_dtype(dst_dtype)) {
    if (src_dtype == dst_dtype) {
      std::memcpy(dst, src, dtype_bytes(src_dtype, n));
      return;
    }
    if (is_block_dtype(src_dtype) && is_block_dtype(dst_dtype)) {  // one format to another, through f32
      std::vector<float> wide(static_cast<std::size_t>(n));
      convert_blocks(src, src_dtype, wide.data(), DType::f32, n);
      return convert_blocks(wide.data(), DType::f32, dst, dst_dtype, n);
    }
    return convert_blocks(src, src_dtype, dst, dst_dtype, n);
  }
  if (src_dtype == dst_dtype) {
    const i64 bytes = n * static_cast<i64>(dtype_size(src_dtype));
    constexpr i64 kPiece = i64{1} << 16;
#pragma omp parallel for if (bytes > kThreadedCopyBytes)
    for (i64 start = 0; start < bytes; start += kPiece)
      std::memcpy(static_cast<std::byte*>(dst) + start, static_cast<const std::byte*>(src) + start,
                  static_cast<std::size_t>(std::min(kPiece, bytes - start)));
    return;
  }
  if (src_dtype == DType::f32 && dst_dtype == DType::bf16) {  // activations rounded for bf16 products
    constexpr i64 kPiece = i64{1} << 14;
#pragma omp parallel for if (n > 65536)
    for (i64 start = 0; start < n; start += kPiece)
      to_bf16(static_cast<const float*>(src) + start, static_cast<std::uint16_t*>(dst) + start,
              std::min(kPiece, n - start));
    return;
  }
  switch (src_dtype) {
    case DType::f32: {
      const auto* in = static_cast<const float*>(src);
      store_all([in](i64 i) { return in[i]; }, dst, dst_dtype, n);
      return;
    }
    case DType::bf16: {
      const auto* in = static_cast<const std::uint16_t*>(src);
      store_all([in](i64 i) { return bf16_to_float(in[i]); }, dst, dst_dtype, n);
      return;
    }
    case DType::f16: {
      const auto* in = static_cast<const std::uint16_t*>(src);
      store_all([in](i64 i) { return f16_to_float(in[i]); }, dst, dst_dtype, n);
      return;
    }
    case DType::i32: {
      const auto* in = static_cast<const std::int32_t*>(src);
      store_all([in](i64 i) { return static_cast<double>(in[i]); }, dst, dst_dtype, n);
      return;
    }
    case DType::i64: {
      const auto* in = static_cast<const std::int64_t*>(src);
      if (dst_dtype == DType::i32) {
        auto* out = static_cast<std::int32_t*>(dst);
        for (i64 i = 0; i < n; ++i) out[i] = static_cast<std::int32_t>(in[i]);
        return;
      }
      store_all([in](i64 i) { return static_cast<double>(in[i]); }, dst, dst_dtype, n);
      return;
    }
    case DType::q8_0:
    case DType::q4_0: return;  // blocks: convert_blocks
  }
}

void copy_strided(const void* src, const i64* src_strides, void* dst, const i64* dst_strides, const i64* shape,
                  int rank, std::size_t element_size) {
  const auto* in = static_cast<const std::byte*>(src);
  auto* out = static_cast<std::byte*>(dst);
  const auto element = static_cast<i64>(element_size);
  const Shape dims(shape, shape + rank);
  // Copy whole innermost rows when both sides have them contiguous.
  if (rank > 0 && src_strides[rank - 1] == 1 && dst_strides[rank - 1] == 1) {
    const auto row = static_cast<std::size_t>(dims[rank - 1]) * element_size;
    const Shape outer(dims.begin(), dims.end() - 1);
    std::vector<i64> src_at, dst_at;
    for_each_offset(outer, Shape(src_strides, src_strides + rank - 1), [&](i64 o) { src_at.push_back(o); });
    for_each_offset(outer, Shape(dst_strides, dst_strides + rank - 1), [&](i64 o) { dst_at.push_back(o); });
    const auto rows = static_cast<i64>(src_at.size());
#pragma omp parallel for if (rows * static_cast<i64>(row) > kThreadedCopyBytes)
    for (i64 k = 0; k < rows; ++k) std::memcpy(out + dst_at[k] * element, in + src_at[k] * element, row);
    return;
  }
  switch (element_size) {  // elements of a size the compiler can move in one instruction
    case 2:
      return copy_elements(static_cast<const std::uint16_t*>(src), src_strides,
                           static_cast<std::uint16_t*>(dst), dst_strides, dims);
    case 4:
      return copy_elements(static_cast<const std::uint32_t*>(src), src_strides,
                           static_cast<std::uint32_t*>(dst), dst_strides, dims);
    case 8:
      return copy_elements(static_cast<const std::uint64_t*>(src), src_strides,
                           static_cast<std::uint64_t*>(dst), dst_strides, dims);
    default:
      break;
  }
  std::vector<i64> offsets;
  offsets.reserve(static_cast<std::size_t>(shape_numel(dims)));
  for_each_offset(dims, Shape(dst_strides, dst_strides + rank), [&](i64 o) { offsets.push_back(o); });
  std::size_t k = 0;
  for_each_offset(dims, Shape(src_strides, src_strides + rank), [&](i64 o) {
    std::memcpy(out + offsets[k++] * element, in + o * element, element_size);
  });
}

}  // namespace loracpp::backend::cpu
