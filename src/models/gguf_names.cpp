#include "models/gguf_names.h"

#include <array>
#include <regex>

namespace loracpp::models {

namespace {

// HuggingFace suffix <-> GGUF suffix, for per-layer tensors and the rest.
constexpr std::array<std::pair<std::string_view, std::string_view>, 12> kLayerNames{{
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
}};
constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kGlobalNames{{
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
}};

io::GgufValue u32(std::int64_t v) { return {io::GgufType::u32, io::GgufType::u32, static_cast<std::uint32_t>(v)}; }
io::GgufValue f32(float v) { return {io::GgufType::f32, io::GgufType::u32, v}; }
io::GgufValue str(const std::string& v) { return {io::GgufType::string, io::GgufType::u32, v}; }

std::int64_t meta_int(const io::GgufFile& g, const std::string& key, const std::string& file) {
  const auto& v = g.require(key, file);
  check(v.is_number_integer() && v.get<std::int64_t>() > 0, "gguf", "metadata '{}' must be a positive integer, got {} ({})",
        key, v.dump(), file);
  return v.get<std::int64_t>();
}

const std::string kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space

}  // namespace

GgufArch gguf_arch_for(const std::string& model_type) {
  if (model_type == "qwen2") return {"qwen2", ops::RopeLayout::half};
  return {"llama", ops::RopeLayout::interleaved};  // llama, mistral
}

std::string gguf_tensor_name(const std::string& hf_name) {
  for (const auto& [hf, gguf] : kGlobalNames)
    if (hf_name == hf) return std::string(gguf);
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (std::regex_match(hf_name, m, layer))
    for (const auto& [hf, gguf] : kLayerNames)
      if (m[2].str() == hf) return fmt::format("blk.{}.{}", m[1].str(), gguf);
  fail("gguf", "no GGUF name for tensor '{}'", hf_name);
}

std::string hf_tensor_name(const std::string& gguf_name, const std::string& file) {
  for (const auto& [hf, gguf] : kGlobalNames)
    if (gguf_name == gguf) return std::string(hf);
  static const std::regex layer(R"(blk\.(\d+)\.(.+))");
  std::smatch m;
  if (std::regex_match(gguf_name, m, layer))
    for (const auto& [hf, gguf] : kLayerNames)
      if (m[2].str() == gguf) return fmt::format("model.layers.{}.{}", m[1].str(), hf);
  fail("gguf", "tensor '{}' is not part of a Llama-family model ({})", gguf_name, file);
}

std::vector<std::pair<std::string, io::GgufValue>> gguf_metadata(const LlamaConfig& c, const GgufArch& arch) {
  check(!c.rope_scaling, "gguf", "Llama-3 rope scaling is not written to GGUF yet; convert to hf instead");
  const std::string a = arch.name + ".";
  return {
      {"general.architecture", str(arch.name)},
      {"general.name", str(c.architecture)},
      {"general.alignment", u32(32)},
      {a + "context_length", u32(c.max_position_embeddings)},
      {a + "embedding_length", u32(c.hidden_size)},
      {a + "block_count", u32(c.num_layers)},
      {a + "feed_forward_length", u32(c.intermediate_size)},
      {a + "attention.head_count", u32(c.num_heads)},
      {a + "attention.head_count_kv", u32(c.num_kv_heads)},
      {a + "attention.key_length", u32(c.head_dim)},
      {a + "attention.value_length", u32(c.head_dim)},
      {a + "attention.layer_norm_rms_epsilon", f32(c.rms_norm_eps)},
      {a + "rope.freq_base", f32(c.rope_theta)},
      {a + "rope.dimension_count", u32(c.head_dim)},
      {a + "vocab_size", u32(c.vocab_size)},
      {"tokenizer.ggml.bos_token_id", u32(c.bos_token_id)},
      {"tokenizer.ggml.eos_token_id", u32(c.eos_token_id)},
  };
}

LlamaConfig config_from_gguf(const io::GgufFile& g, const std::string& file) {
  const auto& arch_value = g.require("general.architecture", file);
  check(arch_value.is_string(), "gguf", "metadata 'general.architecture' must be a string ({})", file);
  const std::string arch = arch_value.get<std::string>();
  const std::string a = arch + ".";
  LlamaConfig c;
  c.model_type = arch;
  c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  c.hidden_size = meta_int(g, a + "embedding_length", file);
  c.num_layers = meta_int(g, a + "block_count", file);
  c.intermediate_size = meta_int(g, a + "feed_forward_length", file);
  c.num_heads = meta_int(g, a + "attention.head_count", file);
  c.num_kv_heads = g.find(a + "attention.head_count_kv") ? meta_int(g, a + "attention.head_count_kv", file) : c.num_heads;
  c.head_dim = g.find(a + "attention.key_length") ? meta_int(g, a + "attention.key_length", file) : c.hidden_size / c.num_heads;
  c.max_position_embeddings = meta_int(g, a + "context_length", file);
  if (const auto* eps = g.find(a + "attention.layer_norm_rms_epsilon")) c.rms_norm_eps = eps->value.get<float>();
  if (const auto* base = g.find(a + "rope.freq_base")) c.rope_theta = base->value.get<float>();
  if (const auto* bos = g.find("tokenizer.ggml.bos_token_id")) c.bos_token_id = bos->value.get<std::int64_t>();
  if (const auto* eos = g.find("tokenizer.ggml.eos_token_id")) c.eos_token_id = eos->value.get<std::int64_t>();
  c.rope_layout = gguf_arch_for(arch).rope_layout;
  bool has_output = false;
  for (const auto& [name, tensor] : g.tensors) {
    if (name == "token_embd.weight") c.vocab_size = tensor.size(0);
    if (name == "output.weight") has_output = true;
    if (name.ends_with("attn_q.bias")) c.attention_bias = true;
  }
  check(c.vocab_size > 0, "gguf", "tensor 'token_embd.weight' is missing ({})", file);
  c.tie_word_embeddings = !has_output;
  c.validate(file);
  return c;
}

void add_gguf_tokenizer(std::vector<std::pair<std::string, io::GgufValue>>& metadata,
                        const tokenizers::Llama2cTokenizer& tokenizer) {
  nlohmann::json tokens = nlohmann::json::array(), scores = nlohmann::json::array(), types = nlohmann::json::array();
  for (std::int64_t i = 0; i < tokenizer.vocab_size(); ++i) {
    std::string piece = tokenizer.piece(i);
    for (std::size_t at = piece.find(' '); at != std::string::npos; at = piece.find(' ', at + kSpace.size()))
      piece.replace(at, 1, kSpace);
    const bool byte = piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>';
    tokens.push_back(piece);
    scores.push_back(tokenizer.score(i));
    types.push_back(i == 0 ? 2 : (i == tokenizer.bos_id() || i == tokenizer.eos_id()) ? 3 : byte ? 6 : 1);
  }
  metadata.emplace_back("tokenizer.ggml.model", str("llama"));
  metadata.emplace_back("tokenizer.ggml.tokens", io::GgufValue{io::GgufType::array, io::GgufType::string, tokens});
  metadata.emplace_back("tokenizer.ggml.scores", io::GgufValue{io::GgufType::array, io::GgufType::f32, scores});
  metadata.emplace_back("tokenizer.ggml.token_type", io::GgufValue{io::GgufType::array, io::GgufType::i32, types});
}

std::unique_ptr<tokenizers::Llama2cTokenizer> tokenizer_from_gguf(const io::GgufFile& g, const std::string& file) {
  const auto* model = g.find("tokenizer.ggml.model");
  if (!model || model->value != "llama") return nullptr;
  const auto& tokens = g.require("tokenizer.ggml.tokens", file);
  const auto& scores = g.require("tokenizer.ggml.scores", file);
  check(tokens.is_array() && scores.is_array() && tokens.size() == scores.size(), "gguf",
        "tokenizer.ggml.tokens and tokenizer.ggml.scores must be arrays of one length ({})", file);
  std::vector<std::string> pieces;
  std::vector<float> values;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    std::string piece = tokens[i].get<std::string>();
    for (std::size_t at = piece.find(kSpace); at != std::string::npos; at = piece.find(kSpace, at + 1))
      piece.replace(at, kSpace.size(), " ");
    pieces.push_back(std::move(piece));
    values.push_back(scores[i].get<float>());
  }
  auto tokenizer =
      std::make_unique<tokenizers::Llama2cTokenizer>(tokenizers::Llama2cTokenizer::from_pieces(pieces, values));
  if (const auto* jinja = g.find("tokenizer.chat_template"); jinja && jinja->value.is_string())
    tokenizer->set_chat_template(jinja->value.get<std::string>());
  return tokenizer;
}

}  // namespace loracpp::models
