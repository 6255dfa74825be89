#include "models/llama.h"

#include <cmath>
#include <numbers>
#include <set>

#include "autograd/checkpoint.h"
#include "core/storage.h"
#include "ops/tape.h"

namespace loracpp::models {

namespace {

constexpr std::string_view kPlace = "llama";

std::int64_t positive_int(const nlohmann::json& j, const char* key, const std::string& file,
                          std::optional<std::int64_t> fallback = {}) {
  if (!j.contains(key) || j[key].is_null()) {
    check(fallback.has_value(), "config", "field '{}' is missing ({})", key, file);
    return *fallback;
  }
  check(j[key].is_number_integer() && j[key].get<std::int64_t>() > 0, "config",
        "field '{}' must be a positive integer, got {} ({})", key, j[key].dump(), file);
  return j[key].get<std::int64_t>();
}

float number(const nlohmann::json& j, const char* key, const std::string& file, float fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  check(j[key].is_number(), "config", "field '{}' must be a number, got {} ({})", key, j[key].dump(), file);
  return j[key].get<float>();
}

bool boolean(const nlohmann::json& j, const char* key, const std::string& file, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  check(j[key].is_boolean(), "config", "field '{}' must be true or false, got {} ({})", key, j[key].dump(), file);
  return j[key].get<bool>();
}

std::int64_t token_id(const nlohmann::json& j, const char* key, const std::string& file, std::int64_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const auto& v = j[key].is_array() && !j[key].empty() ? j[key][0] : j[key];  // Llama 3 lists several eos ids
  check(v.is_number_integer(), "config", "field '{}' must be a token id, got {} ({})", key, j[key].dump(), file);
  return v.get<std::int64_t>();
}

std::string layer_name(std::int64_t layer, const char* suffix) { return fmt::format("model.layers.{}.{}", layer, suffix); }

}  // namespace

LlamaConfig LlamaConfig::from_hf_json(const nlohmann::json& j, const std::string& file) {
  check(j.is_object(), "config", "expected a JSON object ({})", file);
  LlamaConfig c;
  if (j.contains("model_type") && j["model_type"].is_string()) c.model_type = j["model_type"].get<std::string>();
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    c.architecture = j["architectures"][0].get<std::string>();
  c.vocab_size = positive_int(j, "vocab_size", file);
  c.hidden_size = positive_int(j, "hidden_size", file);
  c.intermediate_size = positive_int(j, "intermediate_size", file);
  c.num_layers = positive_int(j, "num_hidden_layers", file);
  c.num_heads = positive_int(j, "num_attention_heads", file);
  c.num_kv_heads = positive_int(j, "num_key_value_heads", file, c.num_heads);
  check(c.hidden_size % c.num_heads == 0 || j.contains("head_dim"), "config",
        "hidden_size {} is not a multiple of num_attention_heads {} and no head_dim is given ({})", c.hidden_size,
        c.num_heads, file);
  c.head_dim = positive_int(j, "head_dim", file, c.hidden_size / c.num_heads);
  c.max_position_embeddings = positive_int(j, "max_position_embeddings", file, 2048);
  c.rms_norm_eps = number(j, "rms_norm_eps", file, 1e-6f);
  c.rope_theta = number(j, "rope_theta", file, 10000.0f);
  c.tie_word_embeddings = boolean(j, "tie_word_embeddings", file, false);
  c.attention_bias = boolean(j, "attention_bias", file, c.model_type == "qwen2");
  c.bos_token_id = token_id(j, "bos_token_id", file, 1);
  c.eos_token_id = token_id(j, "eos_token_id", file, 2);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const auto& s = j["rope_scaling"];
    check(s.is_object(), "config", "field 'rope_scaling' must be an object ({})", file);
    const std::string type = s.value("rope_type", s.value("type", std::string()));
    check(type == "llama3", "config", "rope_scaling type '{}' is not supported; expected llama3 ({})", type, file);
    Llama3RopeScaling r;
    r.factor = number(s, "factor", file, r.factor);
    r.low_freq_factor = number(s, "low_freq_factor", file, r.low_freq_factor);
    r.high_freq_factor = number(s, "high_freq_factor", file, r.high_freq_factor);
    r.original_max_position_embeddings =
        positive_int(s, "original_max_position_embeddings", file, r.original_max_position_embeddings);
    c.rope_scaling = r;
  }
  c.validate(file);
  return c;
}

nlohmann::ordered_json LlamaConfig::to_hf_json() const {
  nlohmann::ordered_json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rope_scaling->factor},
                         {"low_freq_factor", rope_scaling->low_freq_factor},
                         {"high_freq_factor", rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["hidden_act"] = "silu";
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = "float32";
  return j;
}

void LlamaConfig::validate(const std::string& file) const {
  check(num_heads % num_kv_heads == 0, "config", "num_attention_heads {} is not a multiple of num_key_value_heads {} ({})",
        num_heads, num_kv_heads, file);
  check(head_dim % 2 == 0, "config", "head_dim {} must be even for rotary embeddings ({})", head_dim, file);
  check(rms_norm_eps > 0 && rope_theta > 0, "config", "rms_norm_eps and rope_theta must be positive ({})", file);
}

std::vector<float> LlamaConfig::inv_freq() const {
  std::vector<float> freqs = ops::rope_inv_freq(head_dim, rope_theta);
  if (!rope_scaling) return freqs;
  const auto& s = *rope_scaling;
  const double old_context = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_context / s.low_freq_factor, high_wavelen = old_context / s.high_freq_factor;
  for (auto& f : freqs) {
    const double freq = f, wavelen = 2 * std::numbers::pi / freq;
    double scaled = wavelen > low_wavelen ? freq / s.factor : freq;
    if (wavelen >= high_wavelen && wavelen <= low_wavelen) {
      const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      scaled = (1 - smooth) * scaled / s.factor + smooth * scaled;
    }
    f = static_cast<float>(scaled);
  }
  return freqs;
}

std::vector<std::pair<std::string, Shape>> llama_tensor_shapes(const LlamaConfig& c) {
  const std::int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  std::vector<std::pair<std::string, Shape>> shapes{{"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}}};
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    shapes.emplace_back(layer_name(l, "input_layernorm.weight"), Shape{c.hidden_size});
    shapes.emplace_back(layer_name(l, "self_attn.q_proj.weight"), Shape{q, c.hidden_size});
    shapes.emplace_back(layer_name(l, "self_attn.k_proj.weight"), Shape{kv, c.hidden_size});
    shapes.emplace_back(layer_name(l, "self_attn.v_proj.weight"), Shape{kv, c.hidden_size});
    if (c.attention_bias) {
      shapes.emplace_back(layer_name(l, "self_attn.q_proj.bias"), Shape{q});
      shapes.emplace_back(layer_name(l, "self_attn.k_proj.bias"), Shape{kv});
      shapes.emplace_back(layer_name(l, "self_attn.v_proj.bias"), Shape{kv});
    }
    shapes.emplace_back(layer_name(l, "self_attn.o_proj.weight"), Shape{c.hidden_size, q});
    shapes.emplace_back(layer_name(l, "post_attention_layernorm.weight"), Shape{c.hidden_size});
    shapes.emplace_back(layer_name(l, "mlp.gate_proj.weight"), Shape{c.intermediate_size, c.hidden_size});
    shapes.emplace_back(layer_name(l, "mlp.up_proj.weight"), Shape{c.intermediate_size, c.hidden_size});
    shapes.emplace_back(layer_name(l, "mlp.down_proj.weight"), Shape{c.hidden_size, c.intermediate_size});
  }
  shapes.emplace_back("model.norm.weight", Shape{c.hidden_size});
  if (!c.tie_word_embeddings) shapes.emplace_back("lm_head.weight", Shape{c.vocab_size, c.hidden_size});
  return shapes;
}

LlamaModel::LlamaModel(LlamaConfig config, std::map<std::string, Tensor> weights, std::string source)
    : config_(std::move(config)), source_(std::move(source)) {
  config_.validate(source_);
  std::set<std::string> expected;
  const auto shapes = llama_tensor_shapes(config_);
  const auto embed = weights.find("model.embed_tokens.weight");
  check(embed != weights.end(), kPlace, "tensor 'model.embed_tokens.weight' is missing ({})", source_);
  check(is_floating(embed->second.dtype()), kPlace,
        "weights must be floating point, 'model.embed_tokens.weight' is {} ({})", dtype_name(embed->second.dtype()),
        source_);
  // One compute dtype, the embedding's (f32 where that is a block dtype): others are converted once
  // here, except matrices in blocks (a Q8_0 or Q4_0 GGUF file's), which stay as stored for their products.
  const DType dtype = is_block_dtype(embed->second.dtype()) ? DType::f32 : embed->second.dtype();
  for (const auto& [name, shape] : shapes) {
    expected.insert(name);
    auto it = weights.find(name);
    check(it != weights.end(), kPlace, "tensor '{}' is missing ({})", name, source_);
    check(it->second.shape() == shape, kPlace, "tensor '{}' has shape {}, the config needs {} ({})", name,
          shape_str(it->second.shape()), shape_str(shape), source_);
    check(is_floating(it->second.dtype()), kPlace, "tensor '{}' has dtype {}, expected a floating dtype ({})", name,
          dtype_name(it->second.dtype()), source_);
    const bool as_stored = it->second.dtype() == dtype || (is_block_dtype(it->second.dtype()) && it->second.dim() == 2);
    weights_[name] = as_stored ? it->second : ops::to_dtype(it->second, dtype);
  }
  for (const auto& [name, tensor] : weights) {
    const bool derived = name.ends_with("rotary_emb.inv_freq") || (config_.tie_word_embeddings && name == "lm_head.weight");
    check(expected.count(name) || derived, kPlace, "unexpected tensor '{}' for a {} model ({})", name,
          config_.architecture, source_);
  }
  inv_freq_ = config_.inv_freq();
}

void LlamaModel::set_weight(const std::string& name, const Tensor& value) {
  auto it = weights_.find(name);
  check(it != weights_.end(), kPlace, "no tensor named '{}'", name);
  check(value.shape() == it->second.shape(), kPlace, "tensor '{}' must keep shape {}, got {}", name,
        shape_str(it->second.shape()), shape_str(value.shape()));
  it->second = value.dtype() == it->second.dtype() ? value : ops::to_dtype(value, it->second.dtype());
}

void LlamaModel::store_weights(DType linear_dtype, DType other_dtype) {
  autograd::NoGradGuard no_grad;
  std::set<std::string> linear;
  for (const auto& module : linear_modules()) linear.insert(module.path + ".weight");
  if (config_.tie_word_embeddings) linear.insert("model.embed_tokens.weight");
  for (auto& [name, w] : weights_) {
    DType dtype = linear.count(name) ? linear_dtype : other_dtype;
    // The output layer keeps 8 bits under q4_0: its errors reach every logit directly (llama.cpp
    // gives it a finer format than the layers' too).
    const bool output = name == "lm_head.weight" || (config_.tie_word_embeddings && name == "model.embed_tokens.weight");
    if (dtype == DType::q4_0 && output) dtype = DType::q8_0;
    // A weight whose rows do not fill whole blocks stays wide, as llama.cpp keeps such tensors.
    if (is_block_dtype(dtype) && (w.dim() != 2 || w.size(1) % dtype_block(dtype) != 0)) dtype = other_dtype;
    if (w.dtype() != dtype) w = ops::to_dtype(w, dtype);
  }
  Storage::release_cached_blocks();  // the replaced weights' blocks: no step reuses their sizes
}

void LlamaModel::widen_block_weights() {
  autograd::NoGradGuard no_grad;
  for (auto& [name, w] : weights_)
    if (is_block_dtype(w.dtype())) w = ops::to_dtype(w, DType::f32);
}

namespace {
// Gives t's own TensorImpl a copy of its values on device, so every handle on it sees the move.
void move_in_place(Tensor& t, Device device) {
  if (!t.defined() || t.device() == device) return;
  const Tensor moved = ops::contiguous(t).to(device);
  TensorImpl& impl = t.impl();
  impl.storage = moved.storage();
  impl.byte_offset = 0;
  impl.strides = moved.strides();
  impl.grad.reset();
}
}  // namespace

void LlamaModel::to(Device device) {
  autograd::NoGradGuard no_grad;
  for (auto& [name, w] : weights_) move_in_place(w, device);
  for (auto& [module, branches] : adapters_)
    for (auto& branch : branches) {
      move_in_place(branch.a, device);
      move_in_place(branch.b, device);
    }
  Storage::release_cached_blocks();
}

std::vector<nn::LoraBranch>& LlamaModel::adapter_slot(const std::string& module) {
  check(weights_.count(module + ".weight"), kPlace, "no module named '{}'", module);
  return adapters_[module];
}

std::vector<LinearModule> LlamaModel::linear_modules() const {
  std::vector<LinearModule> out;
  for (std::int64_t l = 0; l < config_.num_layers; ++l) {
    for (const char* kind : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      const std::string path = layer_name(l, kind);
      const Tensor& w = weight(path + ".weight");
      const std::string k(kind);
      out.push_back({path, k.substr(k.find('.') + 1), l, w.size(1), w.size(0)});
    }
  }
  if (!config_.tie_word_embeddings)
    out.push_back({"lm_head", "lm_head", -1, config_.hidden_size, config_.vocab_size});
  return out;
}

Tensor LlamaModel::project(const std::string& module, const Tensor& x, const nn::ForwardContext& context) const {
  const auto bias = weights_.find(module + ".bias");
  const auto branches = adapters_.find(module);
  static const std::vector<nn::LoraBranch> none;
  return nn::linear_with_adapters(x, weight(module + ".weight"), bias == weights_.end() ? Tensor() : bias->second,
                                  branches == adapters_.end() ? none : branches->second, context,
                                  std::hash<std::string>{}(module));
}

const Tensor& LlamaModel::weight(const std::string& name) const {
  const auto it = weights_.find(name);
  check(it != weights_.end(), kPlace, "no tensor named '{}'", name);
  return it->second;
}

const std::vector<std::string>& LlamaModel::target_modules() {
  static const std::vector<std::string> names = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

DType LlamaModel::linear_weight_dtype() const { return weight(layer_name(0, "self_attn.k_proj.weight")).dtype(); }

DType LlamaModel::kv_cache_dtype() const {
  const DType weights = linear_weight_dtype();
  return (weights == DType::bf16 || is_block_dtype(weights)) && device() == Device::cpu ? DType::bf16 : DType::f32;
}

KVCache LlamaModel::make_cache(std::int64_t batch, std::int64_t capacity, DType dtype) const {
  KVCache cache;
  cache.capacity = capacity;
  for (std::int64_t l = 0; l < config_.num_layers; ++l) {
    cache.keys.push_back(Tensor::zeros({batch, config_.num_kv_heads, capacity, config_.head_dim}, dtype, device()));
    cache.values.push_back(Tensor::zeros({batch, config_.num_kv_heads, capacity, config_.head_dim}, dtype, device()));
  }
  return cache;
}

// x [batch, seq, hidden] -> [batch, seq, hidden]
Tensor LlamaModel::attention(std::int64_t layer, const Tensor& x, KVCache* cache,
                             const nn::ForwardContext& context) const {
  using namespace ops;
  const std::int64_t batch = x.size(0), seq = x.size(1), hd = config_.head_dim;
  const std::int64_t position = cache ? cache->length : 0;
  auto heads_of = [&](const char* name, std::int64_t heads) {  // -> [batch, heads, seq, head_dim]
    return transpose(reshape(project(layer_name(layer, name), x, context), {batch, seq, heads, hd}), 1, 2);
  };
  const RopeOptions rotary{.theta = config_.rope_theta, .layout = config_.rope_layout, .position_offset = position,
                           .inv_freq = inv_freq_};
  // q and k split into heads as they are rotated.
  const Tensor q = rope_heads(project(layer_name(layer, "self_attn.q_proj"), x, context), config_.num_heads, rotary);
  Tensor k = rope_heads(project(layer_name(layer, "self_attn.k_proj"), x, context), config_.num_kv_heads, rotary);
  Tensor v = heads_of("self_attn.v_proj", config_.num_kv_heads);
  if (cache) {
    check(position + seq <= cache->capacity, kPlace, "the KV cache holds {} positions, {} are needed",
          cache->capacity, position + seq);
    Tensor& keys = cache->keys[static_cast<std::size_t>(layer)];
    Tensor& values = cache->values[static_cast<std::size_t>(layer)];
    assign(slice(keys, 2, position, position + seq), k.dtype() == keys.dtype() ? k : to_dtype(k, keys.dtype()));
    assign(slice(values, 2, position, position + seq), v.dtype() == values.dtype() ? v : to_dtype(v, values.dtype()));
    k = slice(keys, 2, 0, position + seq);
    v = slice(values, 2, 0, position + seq);
  }
  // The attention products follow the linear layers' precision: bf16 on the bf16 path, and over
  // blocks under ops::Bf16BlockProducts.
  const DType linear_dtype = weight(layer_name(layer, "self_attn.q_proj.weight")).dtype();
  const bool bf16 = linear_dtype == DType::bf16 || (is_block_dtype(linear_dtype) && ops::bf16_block_products());
  const Tensor o =
      scaled_dot_product_attention(q, k, v, {.causal = true, .mask = context.attention_mask, .bf16_products = bf16});
  return project(layer_name(layer, "self_attn.o_proj"), reshape(transpose(o, 1, 2), {batch, seq, config_.num_heads * hd}),
                 context);
}

std::vector<Tensor> LlamaModel::trainable_in_layer(std::int64_t layer) const {
  const std::string prefix = fmt::format("model.layers.{}.", layer);
  std::vector<Tensor> out;
  for (auto it = weights_.lower_bound(prefix); it != weights_.end() && it->first.starts_with(prefix); ++it)
    if (it->second.requires_grad()) out.push_back(it->second);
  for (auto it = adapters_.lower_bound(prefix); it != adapters_.end() && it->first.starts_with(prefix); ++it)
    for (const nn::LoraBranch& branch : it->second)
      for (const Tensor* t : {&branch.a, &branch.b})
        if (t->defined() && t->requires_grad()) out.push_back(*t);
  return out;
}

Tensor LlamaModel::forward(const Tensor& ids, KVCache* cache, bool last_only, const nn::ForwardContext& context) const {
  const Tensor x = hidden_states(ids, cache, last_only, context);
  if (config_.tie_word_embeddings) return ops::linear(x, weight("model.embed_tokens.weight"));
  return project("lm_head", x, context);
}

Tensor LlamaModel::hidden_states(const Tensor& given_ids, KVCache* cache, bool last_only,
                                 const nn::ForwardContext& given_context) const {
  using namespace ops;
  const Tensor ids = given_ids.to(device());
  nn::ForwardContext context = given_context;
  if (context.attention_mask.defined()) context.attention_mask = context.attention_mask.to(device());
  check(ids.dim() == 2, kPlace, "ids must be [batch, seq], got {}", shape_str(ids.shape()));
  const std::int64_t seq = ids.size(1);
  const std::int64_t start = cache ? cache->length : 0;
  check(start + seq <= config_.max_position_embeddings, kPlace, "{} positions exceed the model's context of {}",
        start + seq, config_.max_position_embeddings);
  static const std::vector<nn::LoraBranch> none;
  const auto embed_branches = adapters_.find("model.embed_tokens");
  Tensor x = nn::embedding_with_adapters(weight("model.embed_tokens.weight"), ids,
                                         embed_branches == adapters_.end() ? none : embed_branches->second, context);
  if (x.dtype() != dtype()) x = to_dtype(x, dtype());  // a bf16 table (tied to the output layer): rows widened
  const float eps = config_.rms_norm_eps;
  for (std::int64_t l = 0; l < config_.num_layers; ++l) {
    // By value: a checkpointed layer runs again in the backward pass, after this call returns.
    auto layer = [this, l, eps, cache, context](const Tensor& in) {
      using namespace ops;
      const Tensor mid = add(in, attention(l, rms_norm(in, weight(layer_name(l, "input_layernorm.weight")), eps), cache,
                                           context));
      const Tensor h = rms_norm(mid, weight(layer_name(l, "post_attention_layernorm.weight")), eps);
      const Tensor gated = swiglu(project(layer_name(l, "mlp.gate_proj"), h, context),
                                  project(layer_name(l, "mlp.up_proj"), h, context));
      return add(mid, project(layer_name(l, "mlp.down_proj"), gated, context));
    };
    // A KV cache is filled once: a recomputed layer would write its slice again.
    x = context.gradient_checkpointing && !cache ? autograd::checkpoint(layer, x, trainable_in_layer(l)) : layer(x);
  }
  if (cache) cache->length += seq;
  if (last_only) x = slice(x, 1, seq - 1, seq);
  return rms_norm(x, weight("model.norm.weight"), eps);
}

Tensor LlamaModel::loss(const Tensor& ids, const nn::ForwardContext& context) const {
  check(ids.dim() == 2 && ids.size(1) >= 2, kPlace, "loss needs ids [batch, seq >= 2], got {}", shape_str(ids.shape()));
  return loss(ids, ops::contiguous(ops::slice(ids, 1, 1, ids.size(1))), context);
}

Tensor LlamaModel::loss(const Tensor& ids, const Tensor& targets, const nn::ForwardContext& context) const {
  using namespace ops;
  check(ids.dim() == 2 && ids.size(1) >= 2, kPlace, "loss needs ids [batch, seq >= 2], got {}", shape_str(ids.shape()));
  const std::int64_t seq = ids.size(1);
  check(targets.shape() == Shape{ids.size(0), seq - 1}, kPlace, "targets must be [{}, {}], got {}", ids.size(0),
        seq - 1, shape_str(targets.shape()));
  return token_loss(contiguous(slice(ids, 1, 0, seq - 1)), targets, context);
}

Tensor LlamaModel::token_loss(const Tensor& inputs, const Tensor& targets, const nn::ForwardContext& context,
                              std::int64_t ignore_index) const {
  check(inputs.dim() == 2 && targets.shape() == inputs.shape(), kPlace, "inputs and targets must be [batch, seq] alike, got {} and {}",
        shape_str(inputs.shape()), shape_str(targets.shape()));
  const auto head_adapters = adapters_.find("lm_head");
  if (!config_.tie_word_embeddings && head_adapters != adapters_.end() && !head_adapters->second.empty())
    return ops::cross_entropy(forward(inputs, nullptr, false, context), targets.to(device()), ignore_index);
  const Tensor x = hidden_states(inputs, nullptr, false, context);
  return ops::linear_cross_entropy(x, weight(config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"),
                                   targets.to(device()), ignore_index);
}

}  // namespace loracpp::models
