// Speed of the Llama model on a preset shape with random weights (or a model file), in the modes
// of ../shared/peers/torch_lora_bench.py: LoRA training steps (forward, cross-entropy, backward,
// AdamW on the adapters), a forward pass over [batch, seq] (the peer's `--mode infer`), and
// KV-cache generation; and `--mode ceiling`, this machine's f32 GEMM rate at 2048³. Prints one
// JSON line, like the peer; for training also the FLOPs per token and the rate they make.
//   bench_llama --preset tiny --mode lora --rank 8 --targets q,v --steps 5
//   bench_llama --preset small --mode forward --steps 3
//   bench_llama --preset smollm --mode lora --gradient-checkpointing   (memory against a third more compute)
//   bench_llama --model ../shared/models/stories260K/stories260K.bin --mode generate --tokens 200
//   bench_llama --preset small --mode generate --tokens 256 --rank 16   (adds the merged rate and
//     what an unmerged r=16 adapter on every linear layer costs against it)
//   bench_llama --preset small --mode generate --temperature 0.8 --top-p 0.9   (sampling's cost included)
//   bench_llama --preset small --mode generate --prompt 256   (adds the rate at which a prompt fills
//     the KV cache: in one pass, and position by position as a generated token does)
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fmt/core.h>
#include <optional>
#include <sstream>

#include <cblas.h>
#if defined(LORACPP_HAVE_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "autograd/backward.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/kernels.h"
#include "backend/threads.h"
#if defined(LORACPP_WITH_CUDA)
#include "backend/cuda/cuda_backend.h"
#endif
#include "lora/adapter.h"
#include "ops/ops.h"
#include "train/optimizer.h"
#include "core/random.h"
#include "models/registry.h"
#include "models/sampler.h"
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
    {"llama1b", {2048, 16, 32, 8, 8192, 128256, 2048, 1}},  // Llama-3.2-1B's shape (GPU runs)
};

std::unique_ptr<models::LlamaModel> random_model(const Preset& p, bool tied, std::uint64_t seed) {
  models::LlamaConfig c;
  c.tie_word_embeddings = tied;
  c.vocab_size = p.vocab;
  c.hidden_size = p.dim;
  c.intermediate_size = p.ffn;
  c.num_layers = p.layers;
  c.num_heads = p.heads;
  c.num_kv_heads = p.kv_heads;
  c.head_dim = p.dim / p.heads;
  c.max_position_embeddings = std::max<std::int64_t>(p.seq, 4096);
  std::map<std::string, Tensor> weights;
  Rng rng(seed);
  for (const auto& [name, shape] : models::llama_tensor_shapes(c))
    weights[name] = shape.size() == 1 ? Tensor::full(shape, 1.0f) : randn(shape, rng, DType::f32, 0.02f);
  return std::make_unique<models::LlamaModel>(c, std::move(weights), "random");
}

// FLOPs of one LoRA training step per token: 2 per weight for the forward product and 2 for the
// input gradient of every frozen linear (no weight gradient), 6 per adapter weight, and attention
// (QKᵀ and PV forward, twice that backward, causal: half the positions).
double lora_flops_per_token(const models::LlamaConfig& c, std::int64_t seq, std::int64_t adapter_params) {
  const double d = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
  const double kv = static_cast<double>(c.num_kv_heads * c.head_dim), q = static_cast<double>(c.num_heads * c.head_dim);
  const double per_layer = d * q * 2 + d * kv * 2 + 3 * d * f;
  const double linear = per_layer * static_cast<double>(c.num_layers) + d * static_cast<double>(c.vocab_size);
  const double attention = 3.0 * 2.0 * 2.0 * q * static_cast<double>(seq) / 2.0 * static_cast<double>(c.num_layers);
  return 4.0 * linear + 6.0 * static_cast<double>(adapter_params) + attention;
}

// The best GFLOP/s of six runs after a warm-up: a ceiling is what the machine can do, and on a
// shared machine the best run is the one least disturbed.
template <class Fn>
double best_rate(double flops, const Fn& run) {
  run();
  double best = 0;
  for (int r = 0; r < 6; ++r) {
    const auto start = std::chrono::steady_clock::now();
    run();
    best = std::max(best, flops / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 1e9);
  }
  return best;
}

// GFLOP/s of a 2048³ f32 GEMM, the better of OpenBLAS and our gemm kernel (which hands such a
// product to oneDNN's sgemm on CPUs with AVX-512, where Debian's OpenBLAS may run AVX2 kernels):
// the practical ceiling the peer's README quotes, and the best this machine's libraries reach.
double sgemm_gflops() {
  const int n = 2048;
  std::vector<float> a(static_cast<std::size_t>(n) * n, 0.5f), b(a), c(a.size());
  const double blas = best_rate(2.0 * n * n * static_cast<double>(n), [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  });
  auto gemm = LORACPP_KERNEL(Device::cpu, gemm);
  const double ours = best_rate(2.0 * n * n * static_cast<double>(n), [&] {
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  });
  return std::max(blas, ours);
}

// GFLOP/s of a 2048³ bf16 GEMM (f32 accumulation): the better of our gemm_bf16 kernel (oneDNN's
// primitives where this CPU multiplies bf16 natively, its columns shared out between the threads,
// else the operands widened to f32) and, where the CPU multiplies bf16, one oneDNN matmul on
// oneDNN's own threads, so that the ceiling never rests on our way of sharing the work out.
double bf16_gemm_gflops() {
  const std::int64_t n = 2048;
  std::vector<std::uint16_t> a(static_cast<std::size_t>(n * n), float_to_bf16(0.5f)), b(a);
  std::vector<float> c(a.size());
  const double flops = 2.0 * static_cast<double>(n * n * n);
  auto gemm = LORACPP_KERNEL(Device::cpu, gemm_bf16);
  double best = best_rate(flops, [&] { gemm(true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n); });
#if defined(LORACPP_HAVE_ONEDNN)
  if (backend::cpu::bf16_products_native()) {
    using dt = dnnl::memory::data_type;
    const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    const dnnl::memory::desc ad({n, n}, dt::bf16, dnnl::memory::dims{n, 1});
    const dnnl::memory::desc bd({n, n}, dt::bf16, dnnl::memory::dims{1, n});
    const dnnl::memory::desc cd({n, n}, dt::f32, dnnl::memory::dims{n, 1});
    const dnnl::matmul matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(ad, bd, cd), engine));
    dnnl::memory am(ad, engine, a.data()), bm(bd, engine, b.data()), cm(cd, engine, c.data());
    best = std::max(best, best_rate(flops, [&] {
      matmul.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
      stream.wait();
    }));
  }
#endif
  return best;
}

#if defined(LORACPP_WITH_CUDA)
// TFLOP/s of an 8192³ GEMM on the GPU through our kernels (cuBLAS), bf16 (f32 accumulation) or
// f32, on random values (tensor cores run faster on constant ones).
double cuda_gemm_gflops(bool bf16) {
  const std::int64_t n = 8192;
  Rng rng(7);
  const Tensor a = randn({n, n}, rng, bf16 ? DType::bf16 : DType::f32).to(Device::cuda);
  const Tensor b = randn({n, n}, rng, bf16 ? DType::bf16 : DType::f32).to(Device::cuda);
  Tensor c = Tensor::empty({n, n}, DType::f32, Device::cuda);
  const auto& k = backend::kernels(Device::cuda);
  return best_rate(2.0 * static_cast<double>(n * n * n), [&] {
    if (bf16) {
      k.gemm_bf16(true, n, n, n, 1.0f, a.data<std::uint16_t>(), n, b.data<std::uint16_t>(), n, 0.0f,
                  c.mutable_data<float>(), n);
    } else {
      k.gemm(false, false, n, n, n, 1.0f, a.data<float>(), n, b.data<float>(), n, 0.0f, c.mutable_data<float>(), n);
    }
    backend::cuda::synchronize();
  });
}
#endif

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

int run(int argc, char** argv) {
  CLI::App app{"loracpp inference benchmark"};
  std::string preset = "small", model_path, mode = "forward", device = "cpu";
  int steps = 3, warmup = 1, threads = 2;
  std::int64_t tokens = 128, batch = 0, seq = 0;
  app.add_option("--preset", preset)->check(CLI::IsMember({"tiny", "small", "smollm", "llama1b"}));
  app.add_option("--model", model_path, "A model file instead of a preset");
  app.add_option("--mode", mode)->check(CLI::IsMember({"lora", "forward", "generate", "ceiling"}));
  std::int64_t rank = 8;
  float alpha = 16;
  std::string targets = "q,v", dtype = "f32";
  app.add_option("--dtype", dtype,
                 "f32; bf16: frozen linear weights in bf16 (bf16 GEMMs, f32 accumulation); or q8_0 or q4_0: "
                 "frozen linear weights in GGUF's 8- or 4-bit blocks (products in f32)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}));
  app.add_option("--rank", rank);
  app.add_option("--alpha", alpha);
  app.add_option("--targets", targets, "Short names as the peer's (q,k,v,o,gate,up,down) or all");
  app.add_option("--steps", steps, "Timed forward passes");
  app.add_option("--warmup", warmup);
  app.add_option("--tokens", tokens, "Tokens to generate (generate mode)");
  std::int64_t prompt = 0;
  models::SamplerOptions sampling{.temperature = 0.0f};
  app.add_option("--temperature", sampling.temperature, "Sampling temperature (generate mode; 0, the default: greedy)");
  app.add_option("--top-k", sampling.top_k, "Sampling among the k most likely tokens (0: all)");
  app.add_option("--top-p", sampling.top_p, "Nucleus sampling threshold");
  app.add_option("--prompt", prompt, "Prompt tokens to fill the KV cache with first (generate mode)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch);
  app.add_option("--seq", seq);
  app.add_option("--threads", threads);
  bool tied = false, checkpointing = false;
  app.add_flag("--gradient-checkpointing", checkpointing,
               "Recompute each decoder layer in the backward pass (lora mode)");
  app.add_option("--device", device, "cpu, or cuda (timings include a synchronisation per step)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_flag("--tied", tied, "Tie the preset's output layer to its embedding table (as SmolLM-135M does)");
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  if (mode == "ceiling" && device == "cuda") {
#if defined(LORACPP_WITH_CUDA)
    fmt::print("{{\"mode\": \"ceiling\", \"device\": \"cuda\", \"f32_gflops\": {:.1f}, \"bf16_gflops\": {:.1f}}}\n",
               cuda_gemm_gflops(false), cuda_gemm_gflops(true));
    return 0;
#else
    fail("bench_llama", "this build has no CUDA backend");
#endif
  }
  if (mode == "ceiling") {
    fmt::print("{{\"mode\": \"ceiling\", \"threads\": {}, \"f32_gflops\": {:.1f}, \"bf16_gflops\": {:.1f}}}\n",
               threads, sgemm_gflops(), bf16_gemm_gflops());
    return 0;
  }
  std::optional<autograd::NoGradGuard> no_grad;
  if (mode != "lora") no_grad.emplace();

  Preset p = kPresets.at(preset);
  std::unique_ptr<models::LlamaModel> model;
  if (!model_path.empty()) {
    model = std::move(models::load_model(model_path).model);
    p.vocab = model->config().vocab_size;
    p.seq = std::min<std::int64_t>(p.seq, model->config().max_position_embeddings);
  } else {
    model = random_model(p, tied, 1);
  }
  if (dtype != "f32") model->store_weights(parse_dtype(dtype));
  // As the CLI does: over blocks, training steps and a prompt's pass in bf16 where the CPU multiplies
  // it natively, and a generated token's activations quantised to 8 bits where it has 8-bit dot
  // products.
  const bool blocks = is_block_dtype(parse_dtype(dtype));
  const ops::Bf16BlockProducts bf16_block_products(blocks && backend::cpu::bf16_products_native());
  const ops::Q8BlockRows q8_block_rows(blocks);
  if (batch > 0) p.batch = batch;
  if (seq > 0) p.seq = seq;
  Rng rng(2);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(p.batch * p.seq));
  for (auto& id : ids) id = static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(p.vocab));

  double seconds = 0;
  std::int64_t counted = 0;
  std::string extra;
  if (mode == "lora") {
    lora::LoraConfig config;
    config.r = rank;
    config.lora_alpha = alpha;
    if (targets == "all") {
      config.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    } else {
      config.target_modules.clear();
      std::stringstream list(targets);
      for (std::string t; std::getline(list, t, ',');)
        config.target_modules.push_back(t == "gate" || t == "up" || t == "down" ? t + "_proj" : t + "_proj");
    }
    lora::attach_adapter(*model, "default", config, 3);
    const auto params = lora::adapter_parameters(*model, "default", config);
    std::vector<Tensor> tensors;
    std::int64_t adapter_params = 0;
    for (const auto& named : params) {
      tensors.push_back(named.tensor);
      adapter_params += named.tensor.numel();
    }
    if (device == "cuda") model->to(Device::cuda);  // in place: the parameter handles follow
    train::AdamW optimizer(tensors, {.lr = 1e-4f});
    // Random tokens as the peer uses: [batch, seq + 1], inputs and next-token targets.
    std::vector<std::int64_t> inputs, next;
    for (std::int64_t b = 0; b < p.batch; ++b)
      for (std::int64_t t = 0; t < p.seq; ++t) {
        inputs.push_back(static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(p.vocab)));
        next.push_back(static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(p.vocab)));
      }
    const Tensor x = Tensor::from_ints(inputs, {p.batch, p.seq}), y = Tensor::from_ints(next, {p.batch, p.seq});
    double loss = 0;
    auto step = [&] {
      const Tensor l = model->token_loss(x, y, {.training = true, .gradient_checkpointing = checkpointing});
      autograd::backward(l);
      optimizer.step();
      optimizer.zero_grad();
      loss = l.item();
    };
    for (int i = 0; i < warmup; ++i) step();
#if defined(LORACPP_WITH_CUDA)
    if (device == "cuda") backend::cuda::reset_peak_bytes();
#endif
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) step();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    counted = static_cast<std::int64_t>(steps) * p.batch * p.seq;
    const double flops = lora_flops_per_token(model->config(), p.seq, adapter_params);
    extra = fmt::format(", \"rank\": {}, \"targets\": \"{}\", \"trainable\": {}, \"loss\": {:.4f}, "
                        "\"gflop_per_token\": {:.4f}, \"gflops\": {:.1f}",
                        rank, targets, adapter_params, loss, flops / 1e9,
                        flops * static_cast<double>(counted) / seconds / 1e9);
  } else if (mode == "forward") {
    if (device == "cuda") model->to(Device::cuda);
    const Tensor batch_ids = Tensor::from_ints(ids, {p.batch, p.seq});
    for (int i = 0; i < warmup; ++i) model->forward(batch_ids);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) model->forward(batch_ids);
#if defined(LORACPP_WITH_CUDA)
    if (device == "cuda") backend::cuda::synchronize();
#endif
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    counted = static_cast<std::int64_t>(steps) * p.batch * p.seq;
  } else {
    tokens = std::min(tokens, model->config().max_position_embeddings - 1);
    // Generation of `count` tokens into `cache` (greedy unless --temperature); returns the seconds taken.
    models::Sampler sampler(sampling);
    auto generate = [&](models::KVCache& cache, std::int64_t& token, std::int64_t count) {
      const auto start = std::chrono::steady_clock::now();
      for (std::int64_t t = 0; t < count; ++t) {
        const auto logits =
            model->forward(Tensor::from_ints(std::vector<std::int64_t>{token}, {1, 1}), &cache, true).to_floats();
        token = sampler.sample(logits);
      }
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    if (prompt > 0) {
      // A prompt fills its own cache in one pass, then another position by position; the best of
      // `steps` rounds each.
      prompt = std::min({prompt, model->config().max_position_embeddings, static_cast<std::int64_t>(ids.size())});
      const std::vector<std::int64_t> prompt_ids(ids.begin(), ids.begin() + prompt);
      auto fill = [&](bool one_pass) {
        auto prompt_cache = model->make_cache(1, prompt, model->kv_cache_dtype());
        const auto start = std::chrono::steady_clock::now();
        if (one_pass) {
          model->forward(Tensor::from_ints(prompt_ids, {1, prompt}), &prompt_cache, true).to_floats();
        } else {
          for (const std::int64_t id : prompt_ids)
            model->forward(Tensor::from_ints(std::vector<std::int64_t>{id}, {1, 1}), &prompt_cache, true).to_floats();
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      double one_pass = fill(true), by_position = fill(false);
      for (int i = 1; i < steps; ++i) {
        one_pass = std::min(one_pass, fill(true));
        by_position = std::min(by_position, fill(false));
      }
      extra += fmt::format(", \"prompt\": {}, \"prompt_tokens_per_s\": {:.1f}, "
                           "\"prompt_by_position_tokens_per_s\": {:.1f}",
                           prompt, static_cast<double>(prompt) / one_pass, static_cast<double>(prompt) / by_position);
    }
    auto cache = model->make_cache(1, tokens + 1, model->kv_cache_dtype());
    std::int64_t token = 1;
    generate(cache, token, 1);  // warm-up position
    if (app.count("--rank") == 0) {
      seconds = generate(cache, token, tokens);
      counted = tokens;
    } else {
      // What an unmerged adapter costs: the same model generates with the adapter on the side and
      // merged into its weights, in alternating blocks of 16 tokens, each way with its own cache,
      // so that both see the same positions and the same spells of a neighbour's load.
      lora::LoraConfig config;
      config.r = rank;
      config.lora_alpha = alpha;
      config.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
      lora::attach_adapter(*model, "default", config, 3);
      auto merged_cache = model->make_cache(1, tokens + 1, model->kv_cache_dtype());
      std::int64_t merged_token = 1;
      lora::merge_adapter(*model, "default");
      generate(merged_cache, merged_token, 1);
      lora::unmerge_adapter(*model, "default");
      double merged_seconds = 0;
      for (std::int64_t done = 0; done < tokens; done += 16) {
        const std::int64_t block = std::min<std::int64_t>(16, tokens - done);
        seconds += generate(cache, token, block);
        lora::merge_adapter(*model, "default");
        merged_seconds += generate(merged_cache, merged_token, block);
        lora::unmerge_adapter(*model, "default");
      }
      counted = tokens;
      const double merged_rate = static_cast<double>(counted) / merged_seconds;
      extra += fmt::format(", \"merged_tokens_per_s\": {:.1f}, \"unmerged_cost\": {:.3f}", merged_rate,
                          1.0 - static_cast<double>(counted) / seconds / merged_rate);
    }
  }
#if defined(LORACPP_WITH_CUDA)
  if (device == "cuda")
    extra += fmt::format(", \"device\": \"cuda\", \"peak_gpu_mb\": {:.1f}",
                         static_cast<double>(backend::cuda::peak_bytes()) / (1 << 20));
#endif
  fmt::print("{{\"engine\": \"loracpp\", \"preset\": \"{}\", \"model\": \"{}\", \"mode\": \"{}\", \"threads\": {}, "
             "\"dtype\": \"{}\", \"tokens_per_s\": {:.1f}, \"peak_rss_mb\": {:.1f}{}}}\n",
             model_path.empty() ? preset : "", model_path, mode, threads, dtype, static_cast<double>(counted) / seconds,
             peak_rss_mb(), extra);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Error& e) {  // a bad flag value or no GPU: one line, not an abort
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
