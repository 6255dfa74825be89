#include "io/gguf.h"

#include <algorithm>
#include <cstring>

#include "io/atomic_file.h"

namespace loracpp::io {

namespace {

constexpr std::string_view kPlace = "gguf";
constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr std::int64_t kBlock = 32;           // Q8_0 and Q4_0 block size

enum class GgmlType : std::uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q8_0 = 8, bf16 = 30 };

class Reader {
 public:
  Reader(const std::byte* data, std::size_t size, std::string file) : data_(data), size_(size), file_(std::move(file)) {}
  template <class T>
  T read(std::string_view what) {
    check(pos_ + sizeof(T) <= size_, kPlace, "file ends inside {} at byte {} ({})", what, pos_, file_);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string string(std::string_view what) {
    const auto length = read<std::uint64_t>(what);
    check(length <= size_ - pos_, kPlace, "{} claims {} bytes but the file has {} left ({})", what, length,
          size_ - pos_, file_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return s;
  }
  nlohmann::json scalar(GgufType type, const std::string& key) {
    switch (type) {
      case GgufType::u8: return read<std::uint8_t>(key);
      case GgufType::i8: return read<std::int8_t>(key);
      case GgufType::u16: return read<std::uint16_t>(key);
      case GgufType::i16: return read<std::int16_t>(key);
      case GgufType::u32: return read<std::uint32_t>(key);
      case GgufType::i32: return read<std::int32_t>(key);
      case GgufType::f32: return read<float>(key);
      case GgufType::boolean: return read<std::uint8_t>(key) != 0;
      case GgufType::string: return string(key);
      case GgufType::u64: return read<std::uint64_t>(key);
      case GgufType::i64: return read<std::int64_t>(key);
      case GgufType::f64: return read<double>(key);
      case GgufType::array: break;
    }
    fail(kPlace, "metadata '{}' has unknown value type {} ({})", key, static_cast<std::uint32_t>(type), file_);
  }
  std::size_t pos() const { return pos_; }
  const std::string& file() const { return file_; }

 private:
  const std::byte* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::string file_;
};

GgufType value_type(std::uint32_t raw, const std::string& key, const std::string& file) {
  check(raw <= 12, kPlace, "metadata '{}' has unknown value type {} ({})", key, raw, file);
  return static_cast<GgufType>(raw);
}

// The dtype of a tensor read in place (type_bytes has refused the types we do not read).
DType stored_dtype(GgmlType type) {
  switch (type) {
    case GgmlType::f32: return DType::f32;
    case GgmlType::f16: return DType::f16;
    case GgmlType::bf16: return DType::bf16;
    case GgmlType::q8_0: return DType::q8_0;
    case GgmlType::q4_0: return DType::q4_0;
  }
  fail(kPlace, "ggml type {} is not read in place", static_cast<std::uint32_t>(type));
}

// Bytes of `elements` values of a ggml type; throws for types we do not read.
std::size_t type_bytes(std::uint32_t type, std::int64_t inner, std::int64_t elements, const std::string& name,
                       const std::string& file) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::f32: return static_cast<std::size_t>(elements) * 4;
    case GgmlType::f16:
    case GgmlType::bf16: return static_cast<std::size_t>(elements) * 2;
    case GgmlType::q8_0:
    case GgmlType::q4_0:
      check(inner % kBlock == 0, kPlace, "tensor '{}' has {} columns, not a multiple of the block size 32 ({})", name,
            inner, file);
      return dtype_bytes(stored_dtype(static_cast<GgmlType>(type)), elements);  // our blocks are GGUF's
  }
  fail(kPlace, "tensor '{}' has ggml type {}; supported: F32 (0), F16 (1), Q4_0 (2), Q8_0 (8), BF16 (30) ({})", name,
       type, file);
}

}  // namespace

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

const nlohmann::json& GgufFile::require(const std::string& key, const std::string& file) const {
  const GgufValue* v = find(key);
  check(v != nullptr, kPlace, "metadata '{}' is missing ({})", key, file);
  return v->value;
}

GgufFile read_gguf(const std::filesystem::path& path) {
  const std::string file = path.string();
  auto storage = Storage::map_file(path);
  Reader r(storage->data(), storage->nbytes(), file);
  const auto magic = r.read<std::uint32_t>("the magic number");
  check(magic == kMagic, kPlace, "not a GGUF file: magic 0x{:08x}, expected 0x{:08x} ('GGUF') ({})", magic, kMagic, file);
  GgufFile g;
  g.version = r.read<std::uint32_t>("the version");
  check(g.version == 2 || g.version == 3, kPlace, "version {} is not supported; expected 2 or 3 ({})", g.version, file);
  const auto tensor_count = r.read<std::uint64_t>("the tensor count");
  const auto kv_count = r.read<std::uint64_t>("the metadata count");
  // Every entry takes at least 8 bytes: counts beyond that are corrupt, not a reason to allocate.
  check(tensor_count <= storage->nbytes() / 8 && kv_count <= storage->nbytes() / 8, kPlace,
        "tensor count {} or metadata count {} is impossible for a file of {} bytes ({})", tensor_count, kv_count,
        storage->nbytes(), file);
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    const std::string key = r.string("a metadata key");
    GgufValue v;
    v.type = value_type(r.read<std::uint32_t>(key), key, file);
    if (v.type == GgufType::array) {
      v.element_type = value_type(r.read<std::uint32_t>(key), key, file);
      check(v.element_type != GgufType::array, kPlace, "metadata '{}' nests arrays, which is not supported ({})", key, file);
      const auto count = r.read<std::uint64_t>(key);
      check(count <= storage->nbytes() - r.pos(), kPlace, "metadata '{}' claims {} elements, more than the file holds ({})",
            key, count, file);
      v.value = nlohmann::json::array();
      for (std::uint64_t k = 0; k < count; ++k) v.value.push_back(r.scalar(v.element_type, key));
    } else {
      v.value = r.scalar(v.type, key);
    }
    if (key == "general.alignment") {
      check(v.value.is_number_unsigned() && v.value.get<std::uint64_t>() > 0 &&
                (v.value.get<std::uint64_t>() & (v.value.get<std::uint64_t>() - 1)) == 0,
            kPlace, "general.alignment must be a power of two, got {} ({})", v.value.dump(), file);
      g.alignment = v.value.get<std::uint64_t>();
    }
    g.metadata.emplace_back(key, std::move(v));
  }
  struct Info {
    std::string name;
    Shape shape;
    std::uint32_t type;
    std::uint64_t offset;
    std::size_t bytes;
  };
  std::vector<Info> infos;
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    Info info;
    info.name = r.string("a tensor name");
    const auto dims = r.read<std::uint32_t>(info.name);
    check(dims >= 1 && dims <= 4, kPlace, "tensor '{}' has {} dimensions, expected 1 to 4 ({})", info.name, dims, file);
    for (std::uint32_t d = 0; d < dims; ++d) {
      const auto size = r.read<std::uint64_t>(info.name);
      check(size > 0 && size < (1ull << 40), kPlace, "tensor '{}' has dimension {} of size {} ({})", info.name, d, size,
            file);
      info.shape.insert(info.shape.begin(), static_cast<std::int64_t>(size));  // ne[0] is the innermost
    }
    info.type = r.read<std::uint32_t>(info.name);
    info.offset = r.read<std::uint64_t>(info.name);
    info.bytes = type_bytes(info.type, info.shape.back(), shape_numel(info.shape), info.name, file);
    infos.push_back(std::move(info));
  }
  const std::size_t data_start = (r.pos() + g.alignment - 1) / g.alignment * g.alignment;
  check(data_start <= storage->nbytes(), kPlace, "file ends before its tensor data begins ({})", file);
  const std::size_t data_size = storage->nbytes() - data_start;
  std::vector<std::pair<std::uint64_t, std::size_t>> ranges;
  for (const auto& info : infos) {
    check(info.offset % g.alignment == 0, kPlace, "tensor '{}' offset {} is not a multiple of the alignment {} ({})",
          info.name, info.offset, g.alignment, file);
    check(info.offset <= data_size && info.bytes <= data_size - info.offset, kPlace,
          "tensor '{}' needs bytes [{}, {}) but the data section has {} ({})", info.name, info.offset,
          info.offset + info.bytes, data_size, file);
    ranges.emplace_back(info.offset, info.bytes);
    // Every tensor is a view of the mapped file: our q8_0 and q4_0 are GGUF's Q8_0 and Q4_0, byte
    // for byte, so blocks are read in place too.
    g.tensors.emplace_back(info.name, Tensor::from_storage(storage, data_start + info.offset, info.shape,
                                                           stored_dtype(static_cast<GgmlType>(info.type))));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    check(ranges[i].first >= ranges[i - 1].first + ranges[i - 1].second, kPlace,
          "tensor data at offsets {} and {} overlap ({})", ranges[i - 1].first, ranges[i].first, file);
  return g;
}

namespace {
class Writer {
 public:
  explicit Writer(std::ostream& out) : out_(out) {}
  template <class T>
  void put(T value) {
    out_.write(reinterpret_cast<const char*>(&value), sizeof(T));
    written_ += sizeof(T);
  }
  void string(const std::string& s) {
    put<std::uint64_t>(s.size());
    out_.write(s.data(), static_cast<std::streamsize>(s.size()));
    written_ += s.size();
  }
  void bytes(const void* data, std::size_t n) {
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    written_ += n;
  }
  void pad(std::uint64_t alignment) {
    while (written_ % alignment) put<std::uint8_t>(0);
  }
  void scalar(GgufType type, const nlohmann::json& v) {
    switch (type) {
      case GgufType::u8: return put(v.get<std::uint8_t>());
      case GgufType::i8: return put(v.get<std::int8_t>());
      case GgufType::u16: return put(v.get<std::uint16_t>());
      case GgufType::i16: return put(v.get<std::int16_t>());
      case GgufType::u32: return put(v.get<std::uint32_t>());
      case GgufType::i32: return put(v.get<std::int32_t>());
      case GgufType::f32: return put(v.get<float>());
      case GgufType::boolean: return put<std::uint8_t>(v.get<bool>() ? 1 : 0);
      case GgufType::string: return string(v.get<std::string>());
      case GgufType::u64: return put(v.get<std::uint64_t>());
      case GgufType::i64: return put(v.get<std::int64_t>());
      case GgufType::f64: return put(v.get<double>());
      case GgufType::array: fail(kPlace, "nested arrays cannot be written");
    }
  }

 private:
  std::ostream& out_;
  std::size_t written_ = 0;
};

std::uint32_t ggml_type(DType dtype, const std::string& name) {
  switch (dtype) {
    case DType::f32: return static_cast<std::uint32_t>(GgmlType::f32);
    case DType::f16: return static_cast<std::uint32_t>(GgmlType::f16);
    case DType::bf16: return static_cast<std::uint32_t>(GgmlType::bf16);
    case DType::q8_0: return static_cast<std::uint32_t>(GgmlType::q8_0);  // the same blocks, byte for byte
    case DType::q4_0: return static_cast<std::uint32_t>(GgmlType::q4_0);
    default: fail(kPlace, "tensor '{}' is {}; only f32, f16, bf16, q8_0 and q4_0 are written", name, dtype_name(dtype));
  }
}
}  // namespace

void write_gguf(const std::filesystem::path& path, const GgufFile& file) {
  std::vector<std::uint64_t> offsets;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    ggml_type(t.dtype(), name);
    check(t.is_contiguous(), kPlace, "tensor '{}' must be contiguous", name);
    offsets.push_back(offset);
    offset += (static_cast<std::uint64_t>(dtype_bytes(t.dtype(), t.numel())) + file.alignment - 1) / file.alignment *
              file.alignment;
  }
  write_file_atomically(path, [&](std::ostream& out) {
    Writer w(out);
    w.put(kMagic);
    w.put<std::uint32_t>(3);
    w.put<std::uint64_t>(file.tensors.size());
    w.put<std::uint64_t>(file.metadata.size());
    for (const auto& [key, v] : file.metadata) {
      w.string(key);
      w.put(static_cast<std::uint32_t>(v.type));
      if (v.type == GgufType::array) {
        w.put(static_cast<std::uint32_t>(v.element_type));
        w.put<std::uint64_t>(v.value.size());
        for (const auto& e : v.value) w.scalar(v.element_type, e);
      } else {
        w.scalar(v.type, v.value);
      }
    }
    for (std::size_t i = 0; i < file.tensors.size(); ++i) {
      const auto& [name, t] = file.tensors[i];
      w.string(name);
      w.put<std::uint32_t>(static_cast<std::uint32_t>(t.dim()));
      for (std::int64_t d = t.dim() - 1; d >= 0; --d) w.put<std::uint64_t>(static_cast<std::uint64_t>(t.shape()[static_cast<std::size_t>(d)]));
      w.put(ggml_type(t.dtype(), name));
      w.put<std::uint64_t>(offsets[i]);
    }
    w.pad(file.alignment);
    for (const auto& [name, t] : file.tensors) {
      const Tensor host = t.to(Device::cpu);  // device tensors are copied to the host first
      w.bytes(host.raw_data(), dtype_bytes(host.dtype(), host.numel()));
      w.pad(file.alignment);
    }
  });
}

}  // namespace loracpp::io
