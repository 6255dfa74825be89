#include "io/safetensors.h"
#include "io/json_file.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"

namespace loracpp::io {

namespace {

constexpr std::string_view kPlace = "safetensors";

// X(safetensors name, our dtype)
#define LORACPP_SAFETENSORS_DTYPES(X) X("F32", DType::f32) X("BF16", DType::bf16) X("F16", DType::f16) \
  X("I32", DType::i32) X("I64", DType::i64)

DType parse_dtype(const std::string& name, const std::string& tensor, const std::string& file) {
#define LORACPP_PARSE(text, dtype) \
  if (name == text) return dtype;
  LORACPP_SAFETENSORS_DTYPES(LORACPP_PARSE)
#undef LORACPP_PARSE
  fail(kPlace, "tensor '{}' has unsupported dtype '{}'; expected one of F32, BF16, F16, I32, I64 ({})", tensor, name,
       file);
}

std::string dtype_label(DType dtype) {
#define LORACPP_LABEL(text, d) \
  if (dtype == d) return text;
  LORACPP_SAFETENSORS_DTYPES(LORACPP_LABEL)
#undef LORACPP_LABEL
  return "?";
}

}  // namespace

TensorFile read_safetensors(const std::filesystem::path& path) {
  const std::string file = path.string();
  auto storage = Storage::map_file(path);
  const std::size_t size = storage->nbytes();
  check(size >= 8, kPlace, "file is {} bytes, too short for the 8-byte header length ({})", size, file);
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, storage->data(), 8);
  check(header_length <= size - 8, kPlace, "header length {} exceeds file size {} ({})", header_length, size, file);
  const auto* header_begin = reinterpret_cast<const char*>(storage->data() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_length);
  } catch (const nlohmann::json::exception& e) {
    fail(kPlace, "header is not valid JSON: {} ({})", e.what(), file);
  }
  check(header.is_object(), kPlace, "header must be a JSON object ({})", file);
  const std::size_t data_start = 8 + header_length;
  const std::size_t data_size = size - data_start;

  TensorFile result;
  std::vector<std::tuple<std::size_t, std::size_t, std::string>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      check(entry.is_object(), kPlace, "__metadata__ must be an object of strings ({})", file);
      for (const auto& [key, value] : entry.items()) {
        check(value.is_string(), kPlace, "__metadata__ field '{}' must be a string ({})", key, file);
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    check(entry.is_object() && entry.contains("dtype") && entry["dtype"].is_string() && entry.contains("shape") &&
              entry["shape"].is_array() && entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
              entry["data_offsets"].size() == 2,
          kPlace, "tensor '{}' needs string 'dtype', array 'shape' and two 'data_offsets' ({})", name, file);
    const DType dtype = parse_dtype(entry["dtype"].get<std::string>(), name, file);
    Shape shape;
    for (const auto& s : entry["shape"]) {
      check(s.is_number_integer() && s.get<std::int64_t>() >= 0, kPlace,
            "tensor '{}' has an invalid shape {} ({})", name, entry["shape"].dump(), file);
      shape.push_back(s.get<std::int64_t>());
    }
    const auto& offsets = entry["data_offsets"];
    check(offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(), kPlace,
          "tensor '{}' has invalid data_offsets {} ({})", name, offsets.dump(), file);
    const auto begin = offsets[0].get<std::size_t>(), end = offsets[1].get<std::size_t>();
    check(begin <= end && end <= data_size, kPlace,
          "tensor '{}' data_offsets [{}, {}] fall outside the {} data bytes ({})", name, begin, end, data_size, file);
    const auto expected = static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype);
    check(end - begin == expected, kPlace, "tensor '{}' of {} {} needs {} bytes, data_offsets give {} ({})", name,
          entry["dtype"].get<std::string>(), shape_str(shape), expected, end - begin, file);
    ranges.emplace_back(begin, end, name);
    result.tensors.emplace_back(name, Tensor::from_storage(storage, data_start + begin, shape, dtype));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    check(std::get<0>(ranges[i]) >= std::get<1>(ranges[i - 1]), kPlace, "tensors '{}' and '{}' overlap ({})",
          std::get<2>(ranges[i - 1]), std::get<2>(ranges[i]), file);
  // Keep the file's data order (the JSON object is sorted by name, the data need not be).
  std::sort(result.tensors.begin(), result.tensors.end(), [](const auto& a, const auto& b) {
    return a.second.byte_offset() < b.second.byte_offset();
  });
  return result;
}

TensorFile read_safetensors_folder(const std::filesystem::path& folder) {
  const auto single = folder / "model.safetensors";
  if (std::filesystem::exists(single)) return read_safetensors(single);
  const auto index_path = folder / "model.safetensors.index.json";
  check(std::filesystem::exists(index_path), kPlace, "{} has neither model.safetensors nor model.safetensors.index.json",
        folder.string());
  const nlohmann::json index = io::read_json_file(index_path, kPlace);
  check(index.contains("weight_map") && index["weight_map"].is_object(), kPlace,
        "field 'weight_map' (an object of tensor name -> shard file) is missing ({})", index_path.string());
  std::map<std::string, std::string> expected;
  std::set<std::string> shards;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    check(shard.is_string(), kPlace, "weight_map['{}'] must be a file name ({})", name, index_path.string());
    expected[name] = shard.get<std::string>();
    shards.insert(shard.get<std::string>());
  }
  TensorFile result;
  for (const auto& shard : shards) {
    check(shard.find('/') == std::string::npos, kPlace, "shard name '{}' must be a file in the folder ({})", shard,
          index_path.string());
    TensorFile part = read_safetensors(folder / shard);
    for (auto& entry : part.tensors) {
      auto it = expected.find(entry.first);
      check(it != expected.end() && it->second == shard, kPlace, "tensor '{}' in {} is not listed for it in {}",
            entry.first, shard, index_path.string());
      expected.erase(it);
      result.tensors.push_back(std::move(entry));
    }
    result.metadata.insert(part.metadata.begin(), part.metadata.end());
  }
  check(expected.empty(), kPlace, "tensor '{}' listed in {} is missing from {}",
        expected.empty() ? "" : expected.begin()->first, index_path.string(),
        expected.empty() ? "" : expected.begin()->second);
  return result;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    check(names.insert(name).second, kPlace, "tensor name '{}' given twice for {}", name, path.string());
    const std::size_t bytes = static_cast<std::size_t>(tensor.numel()) * dtype_size(tensor.dtype());
    header[name] = {{"dtype", dtype_label(tensor.dtype())}, {"shape", tensor.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  write_file_atomically(path, [&](std::ostream& out) {
    const std::uint64_t length = text.size();
    out.write(reinterpret_cast<const char*>(&length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& entry : tensors) {
      const Tensor t = entry.second.to(Device::cpu);  // device tensors are copied to the host first
      if (t.is_contiguous()) {
        out.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype()))));
      } else {
        const std::size_t element = dtype_size(t.dtype());
        const auto* base = static_cast<const char*>(t.raw_data());
        for_each_offset(t.shape(), t.strides(), [&](std::int64_t i) {
          out.write(base + i * static_cast<std::int64_t>(element), static_cast<std::streamsize>(element));
        });
      }
    }
  });
}

}  // namespace loracpp::io
