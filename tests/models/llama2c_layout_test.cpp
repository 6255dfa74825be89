// llama2.c checkpoints with a separate classifier, and the interleaved rotary layout they (and
// GGUF) use: a HuggingFace fixture model written as a llama2.c file by this test loads to the
// same logits.
#include <fstream>

#include "models/convert.h"
#include "models/registry.h"
#include "ops/tape.h"
#include "test_util.h"

namespace loracpp::models {
namespace {

void write_floats(std::ofstream& out, const Tensor& t) {
  const auto v = ops::contiguous(ops::to_dtype(t, DType::f32)).to_floats();
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
}

TEST(Llama2cLayout, SeparateClassifierAndInterleavedRotaryLoadToTheSameLogits) {
  const auto hf = load_model(testing::fixture_path("llama/llama_gqa"));
  const auto& m = *hf.model;
  const auto& c = m.config();
  ASSERT_FALSE(c.tie_word_embeddings);
  testing::TempDir dir;
  const auto path = dir / "model.bin";
  {
    std::ofstream out(path, std::ios::binary);
    const std::int32_t header[7] = {static_cast<std::int32_t>(c.hidden_size), static_cast<std::int32_t>(c.intermediate_size),
                                    static_cast<std::int32_t>(c.num_layers), static_cast<std::int32_t>(c.num_heads),
                                    static_cast<std::int32_t>(c.num_kv_heads), -static_cast<std::int32_t>(c.vocab_size),
                                    static_cast<std::int32_t>(c.max_position_embeddings)};
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    auto each_layer = [&](const std::string& suffix, bool rotary, std::int64_t heads) {
      for (std::int64_t l = 0; l < c.num_layers; ++l) {
        Tensor w = m.weight(fmt::format("model.layers.{}.{}", l, suffix));
        if (rotary) w = permute_rotary_rows(w, heads, ops::RopeLayout::half, ops::RopeLayout::interleaved);
        write_floats(out, w);
      }
    };
    write_floats(out, m.weight("model.embed_tokens.weight"));
    each_layer("input_layernorm.weight", false, 0);
    each_layer("self_attn.q_proj.weight", true, c.num_heads);
    each_layer("self_attn.k_proj.weight", true, c.num_kv_heads);
    each_layer("self_attn.v_proj.weight", false, 0);
    each_layer("self_attn.o_proj.weight", false, 0);
    each_layer("post_attention_layernorm.weight", false, 0);
    each_layer("mlp.gate_proj.weight", false, 0);
    each_layer("mlp.down_proj.weight", false, 0);
    each_layer("mlp.up_proj.weight", false, 0);
    write_floats(out, m.weight("model.norm.weight"));
    write_floats(out, Tensor::zeros({c.max_position_embeddings, c.head_dim}));  // freq_cis real + imag
    write_floats(out, m.weight("lm_head.weight"));
  }
  const auto l2c = load_model(path);
  EXPECT_EQ(l2c.format, "llama2c");
  EXPECT_FALSE(l2c.model->config().tie_word_embeddings);
  EXPECT_EQ(l2c.model->config().rope_layout, ops::RopeLayout::interleaved);
  autograd::NoGradGuard no_grad;
  const Tensor ids = Tensor::from_ints(std::vector<std::int64_t>{1, 5, 9, 2, 33, 7}, {1, 6});
  EXPECT_TRUE(testing::all_close(l2c.model->forward(ids).to_floats(), m.forward(ids).to_floats(), 1e-5, 1e-5));
  // Trailing bytes are refused: the header must describe the file.
  std::ofstream(path, std::ios::binary | std::ios::app) << "xxxx";
  EXPECT_TRUE(testing::throws_with_prefix([&] { load_model(path); },
                                          "[llama2c] 4 bytes follow the last weight; the header does not describe this file"));
}

}  // namespace
}  // namespace loracpp::models
