#pragma once
// Linear and Embedding layers that can carry LoRA adapters: the base weight stays frozen and each
// adapter adds scale * B(A(dropout(x))), with A [r, in] and B [out, r] (PEFT's contract). Several
// named adapters can sit on one layer; each has its own scale and a user weight (0 disables it).
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace loracpp::nn {

struct LoraBranch {
  std::string adapter;  // the adapter's name
  Tensor a;             // Linear: [r, in]; Embedding: [r, num_embeddings]
  Tensor b;             // Linear: [out, r]; Embedding: [dim, r]
  float scale = 1.0f;   // alpha / r, or alpha / sqrt(r) with rsLoRA
  float dropout = 0.0f;
  float weight = 1.0f;  // the user's multiplier on top of scale
  bool merged = false;  // folded into the base weight: no longer applied on the side
  std::int64_t rank() const { return a.size(0); }
  float effective_scale() const { return scale * weight; }
};

struct ForwardContext {
  bool training = false;     // dropout on
  std::uint64_t seed = 0;    // dropout masks derive from (seed, layer)
  const std::set<std::string>* active = nullptr;  // adapters to apply; null: all with weight != 0
  Tensor attention_mask{};   // additive [batch, 1, seq, seq] on top of the causal mask (packed examples)
  // Each decoder layer keeps only its input for the backward pass, which runs it again
  // (autograd/checkpoint.h): less memory for one more forward pass. The layers run again with a
  // copy of this context, so the set `active` points to must outlive the backward pass.
  bool gradient_checkpointing = false;
};

// x [..., in], weight [out, in], bias [out] or undefined -> [..., out]
Tensor linear_with_adapters(const Tensor& x, const Tensor& weight, const Tensor& bias,
                            std::span<const LoraBranch> branches, const ForwardContext& context,
                            std::uint64_t layer_key);
// weight [vocab, dim], ids [...] -> [..., dim]; branch A is [r, vocab], B [dim, r] (PEFT's
// lora_embedding_A / lora_embedding_B); no dropout, as in PEFT.
Tensor embedding_with_adapters(const Tensor& weight, const Tensor& ids, std::span<const LoraBranch> branches,
                               const ForwardContext& context);

bool branch_active(const LoraBranch& branch, const ForwardContext& context);

}  // namespace loracpp::nn
