#pragma once
// GGUF (versions 2 and 3, little-endian): magic "GGUF", version, tensor and metadata counts, typed
// metadata key/values, tensor infos (name, dims innermost first, type, offset), then the aligned
// data. F32, F16, BF16, Q8_0 and Q4_0 (our q8_0 and q4_0 dtypes, the same blocks) tensors are views
// of the mapped file.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loracpp::io {

enum class GgufType : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9, u64 = 10,
  i64 = 11, f64 = 12
};

struct GgufValue {
  GgufType type = GgufType::u32;
  GgufType element_type = GgufType::u32;  // for arrays
  nlohmann::json value;                   // number, bool, string, or array of those
};

struct GgufFile {
  std::uint32_t version = 3;
  std::uint64_t alignment = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<std::pair<std::string, Tensor>> tensors;  // shapes in PyTorch order (outermost first)

  const GgufValue* find(const std::string& key) const;
  // A required metadata value; throws naming the key and file when absent or of another kind.
  const nlohmann::json& require(const std::string& key, const std::string& file) const;
};

GgufFile read_gguf(const std::filesystem::path& path);
// Writes F32, F16, BF16, Q8_0 and Q4_0 (a q8_0 or q4_0 tensor's blocks as they are) tensors, atomically.
void write_gguf(const std::filesystem::path& path, const GgufFile& file);

}  // namespace loracpp::io
