#pragma once
// safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, then the data. Reading maps the file and hands out views into it, so
// frozen weights are used in place, never copied.
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace loracpp::io {

struct TensorFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;
};

// Validates everything (header length, JSON, dtypes, shapes, offsets in range and not
// overlapping) and throws "[safetensors] ... (file)" on the first problem.
TensorFile read_safetensors(const std::filesystem::path& path);

// A folder's weights: model.safetensors, or the shards listed by model.safetensors.index.json.
TensorFile read_safetensors_folder(const std::filesystem::path& folder);

// Writes atomically. Tensors are written in the given order; any strides and dtype are accepted.
void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace loracpp::io
