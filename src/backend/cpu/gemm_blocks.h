#pragma once
// Products against weights in blocks beyond the gemm_blocks kernel: whether this build multiplies
// rows quantised to 8 bits natively (BlockProducts::q8_rows).

namespace loracpp::backend::cpu {

// Whether a few rows against blocks are quantised to 8 bits for integer dot products when
// BlockProducts::q8_rows asks (built for a CPU with AVX512-VNNI); where not, they stay f32.
bool q8_rows_native();

}  // namespace loracpp::backend::cpu
