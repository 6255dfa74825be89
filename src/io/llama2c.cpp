#include "io/llama2c.h"

#include <cstring>

namespace loracpp::io {

namespace {
constexpr std::string_view kPlace = "llama2c";
}

bool looks_like_llama2c(const std::filesystem::path& path) { return path.extension() == ".bin"; }

Llama2cCheckpoint read_llama2c(const std::filesystem::path& path) {
  const std::string file = path.string();
  auto storage = Storage::map_file(path);
  check(storage->nbytes() >= 28, kPlace, "file is {} bytes, too short for the 28-byte header ({})", storage->nbytes(),
        file);
  std::int32_t raw[7];
  std::memcpy(raw, storage->data(), sizeof(raw));
  Llama2cHeader h{raw[0], raw[1], raw[2], raw[3], raw[4], raw[5] < 0 ? -std::int64_t{raw[5]} : raw[5], raw[6],
                  raw[5] > 0};
  const char* names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  const std::int64_t values[] = {h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len};
  for (int i = 0; i < 7; ++i)
    check(values[i] > 0 && values[i] < (1 << 24), kPlace, "header field {} = {} is out of range ({})", names[i],
          values[i], file);
  check(h.dim % h.n_heads == 0, kPlace, "dim {} is not a multiple of n_heads {} ({})", h.dim, h.n_heads, file);
  check(h.n_heads % h.n_kv_heads == 0, kPlace, "n_heads {} is not a multiple of n_kv_heads {} ({})", h.n_heads,
        h.n_kv_heads, file);
  const std::int64_t head = h.dim / h.n_heads, kv = h.n_kv_heads * head, L = h.n_layers;

  Llama2cCheckpoint out{h, {}};
  std::size_t offset = 28;
  auto take = [&](const Shape& shape) {
    const auto bytes = static_cast<std::size_t>(shape_numel(shape)) * 4;
    check(offset + bytes <= storage->nbytes(), kPlace,
          "file ends at byte {} but the weights of a {}-layer model (dim {}, hidden {}, vocab {}) need more ({})",
          storage->nbytes(), L, h.dim, h.hidden_dim, h.vocab_size, file);
    Tensor t = Tensor::from_storage(storage, offset, shape, DType::f32);
    offset += bytes;
    return t;
  };
  auto per_layer = [&](const std::string& suffix, const Shape& shape) {
    Shape stacked{L};
    stacked.insert(stacked.end(), shape.begin(), shape.end());
    const Tensor all = take(stacked);
    const auto layer_bytes = static_cast<std::size_t>(shape_numel(shape)) * 4;
    for (std::int64_t l = 0; l < L; ++l)
      out.tensors.emplace_back(fmt::format("model.layers.{}.{}", l, suffix),
                               all.as_strided(shape, contiguous_strides(shape),
                                              all.byte_offset() + static_cast<std::size_t>(l) * layer_bytes));
  };
  out.tensors.emplace_back("model.embed_tokens.weight", take({h.vocab_size, h.dim}));
  per_layer("input_layernorm.weight", {h.dim});
  per_layer("self_attn.q_proj.weight", {h.dim, h.dim});
  per_layer("self_attn.k_proj.weight", {kv, h.dim});
  per_layer("self_attn.v_proj.weight", {kv, h.dim});
  per_layer("self_attn.o_proj.weight", {h.dim, h.dim});
  per_layer("post_attention_layernorm.weight", {h.dim});
  per_layer("mlp.gate_proj.weight", {h.hidden_dim, h.dim});
  per_layer("mlp.down_proj.weight", {h.dim, h.hidden_dim});
  per_layer("mlp.up_proj.weight", {h.hidden_dim, h.dim});
  out.tensors.emplace_back("model.norm.weight", take({h.dim}));
  take({h.seq_len, head / 2});  // freq_cis_real: unused, rotary angles are recomputed
  take({h.seq_len, head / 2});  // freq_cis_imag
  if (!h.shared_classifier) out.tensors.emplace_back("lm_head.weight", take({h.vocab_size, h.dim}));
  check(offset == storage->nbytes(), kPlace, "{} bytes follow the last weight; the header does not describe this file ({})",
        storage->nbytes() - offset, file);
  return out;
}

}  // namespace loracpp::io
