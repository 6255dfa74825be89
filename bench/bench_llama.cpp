// Inference speed of the Llama model: a forward pass over [batch, seq] (what the peer's
// `--mode infer` times) and KV-cache generation, on a preset shape with random weights or on a
// model file. Prints one JSON line, like ../shared/peers/torch_lora_bench.py.
//   bench_llama --preset small --mode forward --steps 3
//   bench_llama --model ../shared/models/stories260K/stories260K.bin --mode generate --tokens 200
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fmt/core.h>

#include "backend/threads.h"
#include "core/random.h"
#include "models/registry.h"
#include "ops/tape.h"

using namespace loracpp;

namespace {

struct Preset {
  std::int64_t dim, layers, heads, kv_heads, ffn, vocab, seq, batch;
};
const std::map<std::string, Preset> kPresets = {
    {"tiny", {288, 6, 6, 6, 768, 32000, 256, 4}},
    {"small", {768, 12, 12, 12, 2048, 32000, 512, 2}},
    {"smollm", {576, 30, 9, 3, 1536, 49152, 512, 2}},
};

std::unique_ptr<models::LlamaModel> random_model(const Preset& p, std::uint64_t seed) {
  models::LlamaConfig c;
  c.vocab_size = p.vocab;
  c.hidden_size = p.dim;
  c.intermediate_size = p.ffn;
  c.num_layers = p.layers;
  c.num_heads = p.heads;
  c.num_kv_heads = p.kv_heads;
  c.head_dim = p.dim / p.heads;
  c.max_position_embeddings = std::max<std::int64_t>(p.seq, 1024);
  std::map<std::string, Tensor> weights;
  Rng rng(seed);
  for (const auto& [name, shape] : models::llama_tensor_shapes(c))
    weights[name] = shape.size() == 1 ? Tensor::full(shape, 1.0f) : randn(shape, rng, DType::f32, 0.02f);
  return std::make_unique<models::LlamaModel>(c, std::move(weights), "random");
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loracpp inference benchmark"};
  std::string preset = "small", model_path, mode = "forward";
  int steps = 3, warmup = 1, threads = 2;
  std::int64_t tokens = 128, batch = 0, seq = 0;
  app.add_option("--preset", preset)->check(CLI::IsMember({"tiny", "small", "smollm"}));
  app.add_option("--model", model_path, "A model file instead of a preset");
  app.add_option("--mode", mode)->check(CLI::IsMember({"forward", "generate"}));
  app.add_option("--steps", steps, "Timed forward passes");
  app.add_option("--warmup", warmup);
  app.add_option("--tokens", tokens, "Tokens to generate (generate mode)");
  app.add_option("--batch", batch);
  app.add_option("--seq", seq);
  app.add_option("--threads", threads);
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  autograd::NoGradGuard no_grad;

  Preset p = kPresets.at(preset);
  std::unique_ptr<models::LlamaModel> model;
  if (!model_path.empty()) {
    model = std::move(models::load_model(model_path).model);
    p.vocab = model->config().vocab_size;
    p.seq = std::min<std::int64_t>(p.seq, model->config().max_position_embeddings);
  } else {
    model = random_model(p, 1);
  }
  if (batch > 0) p.batch = batch;
  if (seq > 0) p.seq = seq;
  Rng rng(2);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(p.batch * p.seq));
  for (auto& id : ids) id = static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(p.vocab));

  double seconds = 0;
  std::int64_t counted = 0;
  if (mode == "forward") {
    const Tensor batch_ids = Tensor::from_ints(ids, {p.batch, p.seq});
    for (int i = 0; i < warmup; ++i) model->forward(batch_ids);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) model->forward(batch_ids);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    counted = static_cast<std::int64_t>(steps) * p.batch * p.seq;
  } else {
    tokens = std::min(tokens, model->config().max_position_embeddings - 1);
    auto cache = model->make_cache(1, tokens + 1);
    std::int64_t token = 1;
    model->forward(Tensor::from_ints(std::vector<std::int64_t>{token}, {1, 1}), &cache, true);  // warm-up position
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t t = 0; t < tokens; ++t) {
      const auto logits = model->forward(Tensor::from_ints(std::vector<std::int64_t>{token}, {1, 1}), &cache, true).to_floats();
      token = std::max_element(logits.begin(), logits.end()) - logits.begin();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    counted = tokens;
  }
  fmt::print("{{\"engine\": \"loracpp\", \"preset\": \"{}\", \"model\": \"{}\", \"mode\": \"{}\", \"threads\": {}, "
             "\"tokens_per_s\": {:.1f}, \"peak_rss_mb\": {:.1f}}}\n",
             model_path.empty() ? preset : "", model_path, mode, threads, static_cast<double>(counted) / seconds,
             peak_rss_mb());
  return 0;
}
