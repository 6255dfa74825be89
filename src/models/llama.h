#pragma once
// The Llama family (Llama 2 and 3, Mistral, Qwen2/2.5, SmolLM, TinyLlama): RMSNorm, rotary
// embeddings, grouped-query attention, SwiGLU MLP, tied or untied output layer. Built from ops, so
// the same forward pass trains (autograd) and generates (with a KV cache).
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/lora_layers.h"
#include "ops/ops.h"

namespace loracpp::models {

struct Llama3RopeScaling {
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  std::int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string architecture = "LlamaForCausalLM";  // as HuggingFace names it
  std::string model_type = "llama";
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;  // hidden_size / num_heads unless given
  std::int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  std::optional<Llama3RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  std::int64_t bos_token_id = 1;
  std::int64_t eos_token_id = 2;
  // Row order of q/k projections: HuggingFace's half-split, or the interleaved pairs of llama2.c and GGUF.
  ops::RopeLayout rope_layout = ops::RopeLayout::half;

  // Parses a HuggingFace config.json (its path is named in errors).
  static LlamaConfig from_hf_json(const nlohmann::json& json, const std::string& file);
  nlohmann::ordered_json to_hf_json() const;
  std::vector<float> inv_freq() const;  // per rotary pair, with Llama-3 scaling applied
  void validate(const std::string& file) const;
};

// Per-layer keys and values of the positions seen so far: [batch, kv_heads, capacity, head_dim].
struct KVCache {
  std::vector<Tensor> keys, values;
  std::int64_t length = 0;  // positions filled
  std::int64_t capacity = 0;
};

// A linear layer of the model, by its module path ("model.layers.3.self_attn.q_proj").
struct LinearModule {
  std::string path;
  std::string kind;        // q_proj, k_proj, ..., down_proj, lm_head
  std::int64_t layer = -1;  // -1 outside the decoder layers
  std::int64_t in_features = 0, out_features = 0;
};

class LlamaModel {
 public:
  // weights: HuggingFace names -> tensors (views of mapped files are fine). Checks every tensor's
  // presence and shape against config; unknown extra tensors are refused.
  LlamaModel(LlamaConfig config, std::map<std::string, Tensor> weights, std::string source);

  const LlamaConfig& config() const { return config_; }
  const std::map<std::string, Tensor>& weights() const { return weights_; }
  std::map<std::string, Tensor>& mutable_weights() { return weights_; }
  const Tensor& weight(const std::string& name) const;
  // Replaces a weight (same shape; converted to the model's dtype), for merging and full training.
  void set_weight(const std::string& name, const Tensor& value);
  // The dtype the hidden states compute in: the norms' (f32 on the bf16 training path, where only
  // the frozen GEMM operands are bf16).
  DType dtype() const { return weight("model.norm.weight").dtype(); }
  // Where the weights live; inputs given on another device are copied there.
  Device device() const { return weight("model.norm.weight").device(); }
  // Moves every weight and adapter to device in place: handles on them (an optimiser's parameter
  // list) stay valid, and trainable adapters keep requiring grad.
  void to(Device device);
  // Converts the weights once: the linear layers' to linear_dtype (bf16: the bf16 GEMM path for
  // frozen weights; q8_0 and q4_0: GGUF's 8- and 4-bit blocks, read in place by a generated token's
  // products), every other (embeddings, norms, biases) to other_dtype. A tied embedding table is
  // the output layer's weight too, so it takes linear_dtype; under q4_0 the output layer takes
  // q8_0. A weight whose rows are not whole blocks of 32 takes other_dtype.
  void store_weights(DType linear_dtype, DType other_dtype = DType::f32);
  // Widens weights held in blocks (a Q8_0 or Q4_0 GGUF file's) to f32, for what changes the weights:
  // merging an adapter, full fine-tuning.
  void widen_block_weights();

  // Adapters: the branches on each module path (linear layers and "model.embed_tokens").
  std::vector<nn::LoraBranch>& adapter_slot(const std::string& module);
  const std::map<std::string, std::vector<nn::LoraBranch>>& adapters() const { return adapters_; }
  std::map<std::string, std::vector<nn::LoraBranch>>& mutable_adapters() { return adapters_; }
  std::vector<LinearModule> linear_modules() const;
  const std::string& source() const { return source_; }

  // ids [batch, seq] (i32/i64) -> logits [batch, seq, vocab]; with a cache, positions continue from
  // cache->length and the cache grows by seq. last_only: logits of the final position only.
  Tensor forward(const Tensor& ids, KVCache* cache = nullptr, bool last_only = false,
                 const nn::ForwardContext& context = {}) const;
  // Mean next-token cross-entropy of ids [batch, seq] (targets are ids shifted by one), or of
  // explicit targets [batch, seq-1] where ignore_index marks positions without loss.
  Tensor loss(const Tensor& ids, const nn::ForwardContext& context = {}) const;
  Tensor loss(const Tensor& ids, const Tensor& targets, const nn::ForwardContext& context = {}) const;
  // Mean cross-entropy of targets [batch, seq] given inputs [batch, seq] (position t predicts
  // targets[t]; ignore_index marks positions without loss). Without an adapter on the output layer
  // the logits are never held whole: the head and the loss run fused, in chunks of rows.
  Tensor token_loss(const Tensor& inputs, const Tensor& targets, const nn::ForwardContext& context = {},
                    std::int64_t ignore_index = -100) const;
  KVCache make_cache(std::int64_t batch, std::int64_t capacity, DType dtype = DType::f32) const;
  // The dtype the linear layers' weights are stored in (layer 0's k projection stands for them all).
  DType linear_weight_dtype() const;
  // The dtype a generation's KV cache takes: bf16 where the linear weights are bf16 or blocks on the
  // CPU (half the bytes a generated token reads per position, as llama.cpp's f16 cache), else f32.
  DType kv_cache_dtype() const;

  // The linear layers a LoRA adapter can target, by their short names (q_proj, ..., down_proj).
  static const std::vector<std::string>& target_modules();

 private:
  // The final normed hidden states [batch, seq (or 1 with last_only), hidden], before the head.
  Tensor hidden_states(const Tensor& ids, KVCache* cache, bool last_only, const nn::ForwardContext& context) const;
  Tensor attention(std::int64_t layer, const Tensor& x, KVCache* cache, const nn::ForwardContext& context) const;
  Tensor project(const std::string& module, const Tensor& x, const nn::ForwardContext& context) const;
  // The tensors of a decoder layer that may take gradients: its adapters' A and B, and its weights
  // where they train (full fine-tuning).
  std::vector<Tensor> trainable_in_layer(std::int64_t layer) const;
  LlamaConfig config_;
  std::map<std::string, Tensor> weights_;
  std::string source_;
  std::vector<float> inv_freq_;
  std::map<std::string, std::vector<nn::LoraBranch>> adapters_;
  std::map<std::string, std::uint64_t> module_keys_;  // per-module dropout stream
};

// The tensors a model of this config must have, with their shapes, in a canonical order.
std::vector<std::pair<std::string, Shape>> llama_tensor_shapes(const LlamaConfig& config);

}  // namespace loracpp::models
