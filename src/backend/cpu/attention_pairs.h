#pragma once
// The fused attention's bf16 tiles multiplied by our own kernel over packed pairs of terms
// (gemm_bf16_pairs.h) instead of a library: keys and values are packed once per head, for each
// product in the layout it reads, and the blocks of a tile that causality hides are skipped.
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cpu {

// Whether the kernel takes a call that multiplies in bf16: built for this CPU, and heads whose
// lengths (head_dim, v_dim) are even, so that a row of them is whole pairs as it lies.
bool attention_pairs_fit(const AttentionGeometry& g);

// Key or value heads: head h's rows (dense) at f32 + h * stride, or at bf16 + h * stride when
// held in bf16 (a KV cache on the bf16 path), read in place.
struct HeadRows {
  const float* f32;
  const std::uint16_t* bf16;
  i64 stride;
};

// attention_forward and attention_backward (kernels.h), in bf16 with f32 accumulation.
void attention_forward_pairs(const float* q, HeadRows k, HeadRows v, const float* mask, float* out, float* lse,
                             const AttentionGeometry& g);
void attention_backward_pairs(const float* q, HeadRows k, HeadRows v, const float* mask, const float* out,
                              const float* lse, const float* dout, float* dq, float* dk, float* dv,
                              const AttentionGeometry& g);

}  // namespace loracpp::backend::cpu
