// Broken files made by the tests themselves: each gets one clear error naming the file and the
// tensor or field, never a crash.
#include <cstring>

#include "io/gguf.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "models/registry.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp::io {
namespace {

using testing::throws_with_prefix;

std::string le64(std::uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string le32(std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }

std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

class BadSafetensors : public ::testing::Test {
 protected:
  std::string write(const std::string& bytes) {
    const auto path = dir_ / "model.safetensors";
    testing::write_text(path, bytes);
    return path.string();
  }
  testing::TempDir dir_;
};

TEST_F(BadSafetensors, TooShortForTheHeaderLength) {
  const auto file = write("abc");
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); },
                                 "[safetensors] file is 3 bytes, too short for the 8-byte header length (" + file + ")"));
}

TEST_F(BadSafetensors, HeaderLengthBeyondTheFile) {
  const auto file = write(le64(912) + std::string(392, ' '));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); },
                                 "[safetensors] header length 912 exceeds file size 400 (" + file + ")"));
}

TEST_F(BadSafetensors, HeaderIsNotJson) {
  const auto file = write(safetensors_bytes("{\"a\": [1, 2", ""));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); }, "[safetensors] header is not valid JSON"));
}

TEST_F(BadSafetensors, UnknownDtype) {
  const auto file = write(safetensors_bytes(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); },
                                 "[safetensors] tensor 'w' has unsupported dtype 'F64'; expected one of F32, BF16, F16, I32, I64 (" + file + ")"));
}

TEST_F(BadSafetensors, OffsetsOutOfRange) {
  const auto file = write(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); },
                                 "[safetensors] tensor 'w' data_offsets [0, 16] fall outside the 8 data bytes (" + file + ")"));
}

TEST_F(BadSafetensors, OverlappingTensors) {
  const auto file = write(safetensors_bytes(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      std::string(12, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); }, "[safetensors] tensors 'a' and 'b' overlap (" + file + ")"));
}

TEST_F(BadSafetensors, ByteCountDisagreesWithShape) {
  const auto file = write(safetensors_bytes(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); },
                                 "[safetensors] tensor 'w' of BF16 [3] needs 6 bytes, data_offsets give 8 (" + file + ")"));
}

TEST_F(BadSafetensors, MissingField) {
  const auto file = write(safetensors_bytes(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_safetensors(file); },
                                 "[safetensors] tensor 'w' needs string 'dtype', array 'shape' and two 'data_offsets'"));
}

TEST(Safetensors, WriteThenReadRoundTripsEveryDtypeAndStrides) {
  testing::TempDir dir;
  const Tensor a = Tensor::from_floats(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_floats(std::vector<float>{0.5f, -1}, {2}, DType::bf16);
  const Tensor c = Tensor::from_ints(std::vector<std::int64_t>{7, 8, 9}, {3}, DType::i32);
  const Tensor t = a.as_strided({3, 2}, {1, 3}, 0);  // a transposed view
  write_safetensors(dir / "x.safetensors", {{"a", a}, {"b", b}, {"c", c}, {"t", t}}, {{"format", "pt"}});
  const auto file = read_safetensors(dir / "x.safetensors");
  ASSERT_EQ(file.tensors.size(), 4u);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  EXPECT_EQ(file.tensors[1].second.dtype(), DType::bf16);
  EXPECT_EQ(file.tensors[1].second.to_floats(), (std::vector<float>{0.5f, -1}));
  EXPECT_EQ(file.tensors[2].second.to_ints(), (std::vector<std::int64_t>{7, 8, 9}));
  EXPECT_EQ(file.tensors[3].second.to_floats(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(Safetensors, FailedWriteLeavesTheExistingFileAlone) {
  testing::TempDir dir;
  const auto path = dir / "x.safetensors";
  testing::write_text(path, "precious");
  const Tensor a = Tensor::zeros({2});
  EXPECT_THROW(write_safetensors(path, {{"a", a}, {"a", a}}), Error);  // duplicate names
  EXPECT_EQ(testing::read_text(path), "precious");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()), 1);
}

// ---- models built from a valid fixture folder with one thing broken ----

class BadModelFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::copy(testing::fixture_path("llama/llama_gqa"), dir_.path(), std::filesystem::copy_options::recursive);
    std::filesystem::remove(dir_ / "reference.json");
  }
  nlohmann::json config() { return nlohmann::json::parse(testing::read_text(dir_ / "config.json")); }
  void set_config(const nlohmann::json& c) { testing::write_text(dir_ / "config.json", c.dump()); }
  std::string folder() const { return dir_.path().string(); }
  testing::TempDir dir_;
};

TEST_F(BadModelFolder, ShapeDisagreesWithConfig) {
  auto c = config();
  c["intermediate_size"] = 32;
  set_config(c);
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); },
                                 "[llama] tensor 'model.layers.0.mlp.gate_proj.weight' has shape [24, 16], the config needs [32, 16] (" + folder() + ")"));
}

TEST_F(BadModelFolder, MissingTensor) {
  auto file = read_safetensors(dir_ / "model.safetensors");
  std::vector<std::pair<std::string, Tensor>> kept;
  for (auto& [name, t] : file.tensors)
    if (name != "model.norm.weight") kept.emplace_back(name, ops::contiguous(t));
  write_safetensors(dir_ / "model.safetensors", kept);
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); },
                                 "[llama] tensor 'model.norm.weight' is missing (" + folder() + ")"));
}

TEST_F(BadModelFolder, UnknownArchitectureListsTheSupportedOnes) {
  auto c = config();
  c["architectures"] = {"GPTNeoXForCausalLM"};
  c["model_type"] = "gpt_neox";
  set_config(c);
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); },
                                 "[model] unsupported architecture 'GPTNeoXForCausalLM' (model_type 'gpt_neox'); supported: "
                                 "LlamaForCausalLM (llama), MistralForCausalLM (mistral), Qwen2ForCausalLM (qwen2)"));
}

TEST_F(BadModelFolder, WrongFieldType) {
  auto c = config();
  c["hidden_size"] = "sixteen";
  set_config(c);
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); },
                                 "[config] field 'hidden_size' must be a positive integer, got \"sixteen\" (" +
                                     (dir_ / "config.json").string() + ")"));
}

TEST_F(BadModelFolder, ConfigIsNotJson) {
  testing::write_text(dir_ / "config.json", "{\"vocab_size\": ");
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); },
                                 "[config] " + (dir_ / "config.json").string() + " is not valid JSON"));
}

TEST_F(BadModelFolder, TruncatedWeights) {
  const auto path = dir_ / "model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); }, "[safetensors] tensor '"));
}

TEST_F(BadModelFolder, ShardIndexNamesAMissingTensor) {
  std::filesystem::rename(dir_ / "model.safetensors", dir_ / "model-00001-of-00001.safetensors");
  testing::write_text(dir_ / "model.safetensors.index.json",
                      R"({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors", "extra.weight": "model-00001-of-00001.safetensors"}})");
  EXPECT_TRUE(throws_with_prefix([&] { models::load_model(folder()); }, "[safetensors] tensor '"));
}

TEST_F(BadModelFolder, ShardedFolderLoads) {
  // The weights split over two shards with an index load like the single file.
  auto file = read_safetensors(dir_ / "model.safetensors");
  std::vector<std::pair<std::string, Tensor>> first, second;
  nlohmann::json map;
  for (std::size_t i = 0; i < file.tensors.size(); ++i) {
    auto& [name, t] = file.tensors[i];
    (i % 2 ? second : first).emplace_back(name, ops::contiguous(t));
    map[name] = i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  write_safetensors(dir_ / "model-00001-of-00002.safetensors", first);
  write_safetensors(dir_ / "model-00002-of-00002.safetensors", second);
  std::filesystem::remove(dir_ / "model.safetensors");
  testing::write_text(dir_ / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  EXPECT_EQ(models::load_model(folder()).model->weights().size(), file.tensors.size());
}

// ---- llama2.c ----

TEST(BadLlama2c, TruncatedCheckpoint) {
  testing::TempDir dir;
  const auto path = dir / "model.bin";
  std::filesystem::copy_file(testing::shared_path("models/stories260K/stories260K.bin"), path);
  std::filesystem::resize_file(path, 5000);
  EXPECT_TRUE(throws_with_prefix([&] { read_llama2c(path); },
                                 "[llama2c] file ends at byte 5000 but the weights of a 5-layer model (dim 64, hidden 172, vocab 512) need more (" + path.string() + ")"));
}

TEST(BadLlama2c, NonsenseHeader) {
  testing::TempDir dir;
  const auto path = dir / "model.bin";
  testing::write_text(path, le32(64) + le32(172) + le32(0) + le32(8) + le32(4) + le32(512) + le32(512));
  EXPECT_TRUE(throws_with_prefix([&] { read_llama2c(path); },
                                 "[llama2c] header field n_layers = 0 is out of range (" + path.string() + ")"));
}

// ---- GGUF ----

std::string gguf_string(const std::string& s) { return le64(s.size()) + s; }

// A GGUF v3 file with one tensor and general.architecture = "llama".
std::string gguf_with_tensor(const std::string& name, const std::vector<std::uint64_t>& dims, std::uint32_t type,
                             std::uint64_t offset, const std::string& data, std::uint32_t version = 3) {
  std::string b = le32(0x46554747) + le32(version) + le64(1) + le64(1);
  b += gguf_string("general.architecture") + le32(8) + gguf_string("llama");
  b += gguf_string(name) + le32(static_cast<std::uint32_t>(dims.size()));
  for (auto d : dims) b += le64(d);
  b += le32(type) + le64(offset);
  b.append((32 - b.size() % 32) % 32, '\0');
  return b + data;
}

TEST(BadGguf, WrongMagic) {
  testing::TempDir dir;
  const auto path = dir / "m.gguf";
  testing::write_text(path, "GGML" + std::string(60, '\0'));
  EXPECT_TRUE(throws_with_prefix([&] { read_gguf(path); }, "[gguf] not a GGUF file: magic 0x4c4d4747, expected 0x46554747"));
}

TEST(BadGguf, UnsupportedVersion) {
  testing::TempDir dir;
  const auto path = dir / "m.gguf";
  testing::write_text(path, gguf_with_tensor("w", {4}, 0, 0, std::string(16, '\0'), 1));
  EXPECT_TRUE(throws_with_prefix([&] { read_gguf(path); }, "[gguf] version 1 is not supported; expected 2 or 3 (" + path.string() + ")"));
}

TEST(BadGguf, TruncatedMetadata) {
  testing::TempDir dir;
  const auto path = dir / "m.gguf";
  testing::write_text(path, gguf_with_tensor("w", {4}, 0, 0, std::string(16, '\0')).substr(0, 40));
  EXPECT_TRUE(throws_with_prefix([&] { read_gguf(path); }, "[gguf] "));
}

TEST(BadGguf, TensorBeyondTheData) {
  testing::TempDir dir;
  const auto path = dir / "m.gguf";
  testing::write_text(path, gguf_with_tensor("w", {8}, 0, 0, std::string(16, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_gguf(path); },
                                 "[gguf] tensor 'w' needs bytes [0, 32) but the data section has 16 (" + path.string() + ")"));
}

TEST(BadGguf, UnsupportedTensorType) {
  testing::TempDir dir;
  const auto path = dir / "m.gguf";
  testing::write_text(path, gguf_with_tensor("w", {32}, 12, 0, std::string(256, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_gguf(path); }, "[gguf] tensor 'w' has ggml type 12; supported: F32 (0), F16 (1), Q4_0 (2), Q8_0 (8), BF16 (30)"));
}

TEST(BadGguf, MisalignedOffset) {
  testing::TempDir dir;
  const auto path = dir / "m.gguf";
  testing::write_text(path, gguf_with_tensor("w", {2}, 0, 4, std::string(32, '\0')));
  EXPECT_TRUE(throws_with_prefix([&] { read_gguf(path); }, "[gguf] tensor 'w' offset 4 is not a multiple of the alignment 32"));
}

TEST(Gguf, Q8AndQ4BlocksAreReadInPlace) {
  // Q8_0: f16 scale 0.5, then int8 values -16..15 -> value * 0.5.
  std::string q8 = le32(0).substr(0, 0);
  const std::uint16_t half = float_to_f16(0.5f);
  q8.append(reinterpret_cast<const char*>(&half), 2);
  for (int i = 0; i < 32; ++i) q8.push_back(static_cast<char>(i - 16));
  testing::TempDir dir;
  testing::write_text(dir / "q8.gguf", gguf_with_tensor("w", {32}, 8, 0, q8));
  const Tensor t8 = read_gguf(dir / "q8.gguf").tensors.at(0).second;
  EXPECT_EQ(t8.dtype(), DType::q8_0);
  const auto w8 = t8.to_floats();
  for (int i = 0; i < 32; ++i) EXPECT_EQ(w8[static_cast<std::size_t>(i)], 0.5f * static_cast<float>(i - 16));
  // Q4_0: f16 scale 2, byte j holds element j (low nibble) and j+16 (high nibble), each minus 8.
  std::string q4;
  const std::uint16_t two = float_to_f16(2.0f);
  q4.append(reinterpret_cast<const char*>(&two), 2);
  for (int j = 0; j < 16; ++j) q4.push_back(static_cast<char>((j & 0xF) | ((15 - j) << 4)));
  testing::write_text(dir / "q4.gguf", gguf_with_tensor("w", {32}, 2, 0, q4));
  const Tensor t4 = read_gguf(dir / "q4.gguf").tensors.at(0).second;
  EXPECT_EQ(t4.dtype(), DType::q4_0);
  const auto w4 = t4.to_floats();
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(w4[static_cast<std::size_t>(j)], 2.0f * static_cast<float>(j - 8));
    EXPECT_EQ(w4[static_cast<std::size_t>(j + 16)], 2.0f * static_cast<float>(15 - j - 8));
  }
}

// q8_0 and q4_0 tensors are written as GGUF's Q8_0 and Q4_0 blocks, byte for byte, beside an f32
// one: reading the file back gives the same blocks, and the f32 tensor's values past them.
TEST(Gguf, BlockTensorsAreWrittenAsTheirBlocks) {
  std::vector<float> values(128);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.3f * static_cast<float>(i)) * 2.0f;
  for (const DType dtype : {DType::q8_0, DType::q4_0}) {
    const Tensor w = Tensor::from_floats(values, {2, 64}, dtype);
    GgufFile file;
    file.metadata.push_back({"general.architecture", {GgufType::string, GgufType::u8, "llama"}});
    file.tensors = {{"w", w}, {"b", Tensor::from_floats(std::vector<float>{1, 2, 3}, {3})}};
    testing::TempDir dir;
    write_gguf(dir / "blocks.gguf", file);
    const auto back = read_gguf(dir / "blocks.gguf");
    ASSERT_EQ(back.tensors.size(), 2u);
    const Tensor& w_back = back.tensors[0].second;
    EXPECT_EQ(w_back.dtype(), dtype);
    EXPECT_EQ(w_back.shape(), (Shape{2, 64}));
    const std::size_t bytes = dtype_bytes(dtype, 128);
    ASSERT_GE(w_back.storage()->nbytes() - w_back.byte_offset(), bytes);
    EXPECT_EQ(std::memcmp(w_back.raw_data(), w.raw_data(), bytes), 0) << dtype_name(dtype);
    EXPECT_EQ(back.tensors[1].second.to_floats(), (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(Tensor::from_floats(w_back.to_floats(), {2, 64}, dtype).to_floats(), w.to_floats());
  }
}

TEST(Gguf, Version2ReadsLikeVersion3) {
  testing::TempDir dir;
  std::string data(16, '\0');
  const float one = 1.0f;
  std::memcpy(data.data(), &one, 4);
  testing::write_text(dir / "v2.gguf", gguf_with_tensor("w", {4}, 0, 0, data, 2));
  const auto g = read_gguf(dir / "v2.gguf");
  EXPECT_EQ(g.version, 2u);
  EXPECT_EQ(g.tensors.at(0).second.to_floats(), (std::vector<float>{1, 0, 0, 0}));
  EXPECT_EQ(g.require("general.architecture", "v2.gguf"), "llama");
}

}  // namespace
}  // namespace loracpp::io
