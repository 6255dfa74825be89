// `lora train`: LoRA (or full) training on text, with progress, metrics, checkpoints and resume.
#include <unistd.h>

#include <fmt/core.h>
#include <fstream>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "backend/cpu/gemm_bf16.h"
#include "cli/data_args.h"
#include "core/storage.h"
#include "io/atomic_file.h"
#include "lora/adapter.h"
#include "models/convert.h"
#include "models/registry.h"
#include "ops/ops.h"
#include "ops/tape.h"
#include "train/trainer.h"

namespace loracpp::cli {

namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (char c : text + ",") {
    if (c == ',') {
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else if (c != ' ') {
      item += c;
    }
  }
  return out;
}

std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

// The output folder must be creatable and writable, and must not hold results we would overwrite.
// Checked before the model and data are read (a mistake there is told at once), and created only
// once they have been (check_output, then create_output), so that bad input leaves no folder
// behind.
void check_output(const std::filesystem::path& out, bool may_overwrite) {
  std::error_code error;
  // The folder, or the nearest one above it that exists: where it would be created.
  std::filesystem::path existing = std::filesystem::absolute(out, error);
  while (!std::filesystem::exists(existing, error) && existing.has_relative_path()) existing = existing.parent_path();
  check(std::filesystem::is_directory(existing, error), "train", "cannot create output folder {}: {} is not a folder",
        out.string(), existing.string());
  if (!std::filesystem::equivalent(existing, out, error)) {
    check(::access(existing.c_str(), W_OK) == 0, "train", "cannot create output folder {}: {} is not writable",
          out.string(), existing.string());
    return;
  }
  for (const char* result : {"adapter_model.safetensors", "model.safetensors"})
    check(may_overwrite || !std::filesystem::exists(out / result), "train",
          "output folder {} already holds {}; pass --overwrite or choose another --out", out.string(), result);
  const auto probe = out / ".write-probe";
  try {
    io::write_file_atomically(probe, [](std::ostream& o) { o << "ok"; });
  } catch (const Error&) {
    fail("train", "output folder {} is not writable", out.string());
  }
  std::filesystem::remove(probe, error);
}

void create_output(const std::filesystem::path& out) {
  std::error_code error;
  std::filesystem::create_directories(out, error);
  check(std::filesystem::is_directory(out), "train", "cannot create output folder {}: {}", out.string(),
        error ? error.message() : "not a folder");
}

}  // namespace

void TrainCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("train", "Train a LoRA adapter (or, with --full, every weight) on text");
  app->add_option("--model,-m", model, "Base model: HuggingFace folder, .gguf or llama2.c .bin");
  app->add_option("--tokenizer", tokenizer, "Tokenizer file (default: found next to the model)");
  app->add_option("--data,-d", data, "Training data: .txt (documents split by % lines or blank lines), .jsonl (text, "
                                     "prompt/completion, messages, instruction/input/output, text/label), .csv, .tsv");
  app->add_option("--validation-data", validation_data, "Validation text (default: a held-out fraction of --data)");
  app->add_option("--validation-fraction", validation_fraction, "Fraction of documents held out")->check(CLI::Range(0.0, 0.9));
  app->add_option("--out,-o", out, "Output folder: the adapter (PEFT format), metrics.jsonl, checkpoints");
  app->add_option("-c,--config", config_file, "JSON file of option values (flags win)");
  app->add_option("--resume", resume, "Continue from a checkpoint folder of the same configuration");
  app->add_flag("--overwrite", overwrite, "Allow replacing a previous result in --out");
  app->add_flag("--full", full, "Train every weight instead of an adapter (pretraining, full fine-tuning)");
  app->add_option("--r,--rank", r, "Adapter rank")->check(CLI::PositiveNumber);
  app->add_option("--alpha,--lora-alpha", alpha, "Adapter alpha (scale alpha / r)");
  app->add_option("--dropout,--lora-dropout", dropout, "Dropout on the adapter input")->check(CLI::Range(0.0f, 0.99f));
  app->add_option("--targets,--target-modules", targets, "Comma-separated module names, 'all-linear', or re:REGEX");
  app->add_option("--layers", layers, "Only these layers (layers_to_transform)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_flag("--rslora", rslora, "Scale by alpha / sqrt(r)");
  app->add_option("--init", init, "Adapter init: default (Kaiming A, zero B) or gaussian")
      ->check(CLI::IsMember({"default", "gaussian"}));
  app->add_option("--bias", bias, "Biases to train: none, lora_only, all")->check(CLI::IsMember({"none", "lora_only", "all"}));
  app->add_option("--modules-to-save", modules_to_save, "Modules trained in full and saved with the adapter")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--seq-len", seq_len, "Tokens per sequence")->check(CLI::PositiveNumber);
  app->add_option("--steps", steps, "Optimiser steps")->check(CLI::PositiveNumber);
  app->add_option("--batch-size", batch_size, "Sequences per optimiser step")->check(CLI::PositiveNumber);
  app->add_option("--micro-batch-size", micro_batch_size, "Sequences per forward pass (gradient accumulation)");
  app->add_flag("--gradient-checkpointing", gradient_checkpointing,
                "Keep only each decoder layer's input and recompute the layer in the backward pass: less memory "
                "for activations, about a third more time");
  app->add_option("--lr", lr, "Peak learning rate")->check(CLI::PositiveNumber);
  app->add_option("--weight-decay", weight_decay, "AdamW decoupled weight decay");
  app->add_option("--max-grad-norm", max_grad_norm, "Clip gradients to this global norm (0: off)");
  app->add_option("--schedule", schedule, "constant, cosine or linear")->check(CLI::IsMember({"constant", "cosine", "linear"}));
  app->add_option("--warmup", warmup, "Linear warm-up steps");
  app->add_option("--min-lr-ratio", min_lr_ratio, "Decay to this fraction of the peak");
  app->add_option("--eval-every", eval_every, "Evaluate every N steps (always at the end)");
  app->add_option("--eval-batches", eval_batches, "Evaluate on at most N batches (0: all)");
  app->add_option("--early-stopping", early_stopping, "Stop after N evaluations without improvement");
  app->add_option("--save-every", save_every, "Checkpoint every N steps");
  app->add_option("--stop-at", stop_at, "Stop at this step with a checkpoint, to resume later");
  app->add_option("--seed", seed, "Seed for initialisation, data order and dropout");
  app->add_option("--base-dtype", base_dtype,
                  "Frozen linear weights in f32; bf16 (bf16 GEMMs with f32 accumulation; adapters stay f32); or q8_0 "
                  "or q4_0 (GGUF's 8- and 4-bit blocks, a quarter and an eighth of f32's memory, widened slice by "
                  "slice for bf16 products where the CPU has them, as QLoRA computes, else f32; CPU only)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}));
  app->add_option("--device", device, "Where to train: cpu, or cuda (an NVIDIA GPU; needs a build with nvcc)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  data_args.add_to(*app);
}

int TrainCommand::run() {
  if (!config_file.empty()) apply_json_config(*app, config_file);
  check(!model.empty() && !data.empty() && !out.empty(), "train", "--model, --data and --out are required");
  if (device == "cuda") {
    check(base_dtype != "q8_0" && base_dtype != "q4_0", "train",
          "--base-dtype {} runs on the CPU only; on a GPU, bf16 halves the memory", base_dtype);
    const std::string why = Storage::unavailable_reason(Device::cuda);
    check(why.empty(), "train", "--device cuda: {}", why);
  }
  check_output(out, overwrite || !resume.empty());
  auto loaded = models::load_model(model, {.tokenizer = tokenizer});
  check(loaded.tokenizer != nullptr, "train", "no tokenizer found next to {}; give one with --tokenizer", model);
  auto& m = *loaded.model;
  check(seq_len <= m.config().max_position_embeddings, "train", "--seq-len {} exceeds the model's context of {}",
        seq_len, m.config().max_position_embeddings);

  lora::LoraConfig config;
  std::vector<lora::NamedParameter> params;
  if (full) {
    autograd::NoGradGuard no_grad;
    m.widen_block_weights();  // a Q8_0 GGUF file's blocks: trained weights are f32
    for (const auto& [name, shape] : models::llama_tensor_shapes(m.config())) {
      m.set_weight(name, ops::scale(ops::to_dtype(m.weight(name), DType::f32), 1.0f));  // owned f32 copies
      Tensor w = m.weight(name);
      params.push_back({name, w});
    }
    for (auto& p : params) p.tensor.set_requires_grad();
  } else {
    config.r = r;
    config.lora_alpha = alpha;
    config.lora_dropout = dropout;
    if (targets == "all-linear") {
      config.all_linear = true;
      config.target_modules.clear();
    } else if (targets.starts_with("re:")) {
      config.target_regex = targets.substr(3);
      config.target_modules.clear();
    } else {
      config.target_modules = split_list(targets);
    }
    config.layers_to_transform = layers;
    config.use_rslora = rslora;
    config.init_lora_weights = init;
    config.bias = bias;
    config.modules_to_save = modules_to_save;
    config.base_model_name_or_path = model;
    // Activations, norms and embeddings compute in f32; frozen linear weights stay in f32, bf16 or blocks.
    m.store_weights(parse_dtype(base_dtype));
    lora::attach_adapter(m, "default", config, seed);
    params = lora::adapter_parameters(m, "default", config);
  }
  if (device == "cuda") m.to(Device::cuda);  // in place: the parameter handles follow
  std::int64_t trainable = 0, frozen = 0;
  for (const auto& p : params) trainable += p.tensor.numel();
  for (const auto& [name, w] : m.weights()) frozen += w.numel();
  if (!full) fmt::print(stderr, "adapter: {} trainable parameters on a frozen base of {}\n", trainable, frozen);
  if (!full && base_dtype == "bf16" && device == "cpu" && !backend::cpu::bf16_products_native())
    fmt::print(stderr, "note: this CPU has no native bf16 products (AVX512-BF16 or AMX): --base-dtype bf16 halves "
                       "the frozen weights' memory, but they multiply at the f32 rate, widened as they are read\n");
  // Over blocks a step computes in bf16 where the CPU multiplies it natively, as QLoRA does (ops.h).
  const ops::Bf16BlockProducts bf16_block_products(!full && is_block_dtype(parse_dtype(base_dtype)) && device == "cpu" &&
                                                   backend::cpu::bf16_products_native());

  const auto prepared = prepare_data(data_args, data, validation_data, validation_fraction, seed, *loaded.tokenizer,
                                     model, seq_len);
  print_data_summary(prepared, seq_len);
  train::TrainOptions options;
  options.steps = steps;
  options.batch_size = batch_size;
  options.micro_batch_size = micro_batch_size;
  options.lr = lr;
  options.weight_decay = weight_decay;
  options.max_grad_norm = max_grad_norm;
  options.schedule = train::parse_schedule_kind(schedule);
  options.warmup_steps = warmup;
  options.min_lr_ratio = min_lr_ratio;
  options.eval_every = eval_every;
  options.eval_batches = eval_batches;
  options.early_stopping_patience = early_stopping;
  options.save_every = save_every;
  options.stop_at = stop_at;
  options.seed = seed;
  options.gradient_checkpointing = gradient_checkpointing;
  if (gradient_checkpointing)
    fmt::print(stderr, "gradient checkpointing: each decoder layer keeps only its input and runs again in the "
                       "backward pass\n");
  const nlohmann::ordered_json fingerprint = {
      {"model", model}, {"data", data}, {"validation_data", validation_data},
      {"validation_fraction", validation_fraction}, {"seq_len", seq_len}, {"full", full},
      {"lora", full ? nlohmann::ordered_json() : config.to_json()}, {"steps", steps}, {"batch_size", batch_size},
      {"micro_batch_size", micro_batch_size}, {"lr", lr}, {"weight_decay", weight_decay},
      {"max_grad_norm", max_grad_norm}, {"schedule", schedule}, {"warmup", warmup}, {"min_lr_ratio", min_lr_ratio},
      {"eval_every", eval_every}, {"eval_batches", eval_batches}, {"early_stopping", early_stopping}, {"seed", seed},
      {"data_options", data_args.to_json()}, {"base_dtype", base_dtype}};
  create_output(out);
  train::Trainer trainer(m, params, prepared.train, prepared.validation ? &*prepared.validation : nullptr, options,
                         fingerprint.dump(), out);
  if (!resume.empty()) {
    trainer.resume(resume);
    fmt::print(stderr, "resumed at step {} from {}\n", trainer.step(), resume);
  }

  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  std::ofstream metrics(std::filesystem::path(out) / "metrics.jsonl", std::ios::app);
  double last_loss = 0;
  const auto final_eval = trainer.run([&](const train::TrainEvent& e) {
    using Kind = train::TrainEvent::Kind;
    if (e.kind == Kind::step) {
      last_loss = e.loss;
      metrics << nlohmann::json{{"step", e.step}, {"loss", e.loss}, {"lr", e.lr}, {"grad_norm", e.grad_norm},
                                {"tokens_per_s", e.tokens_per_s}, {"elapsed_s", e.elapsed_s}}.dump() << "\n";
      if (terminal) {
        const int filled = static_cast<int>(30.0 * static_cast<double>(e.step) / static_cast<double>(steps));
        fmt::print(stderr, "\r[{}{}] step {}/{} loss {:.4f} lr {:.2e} {:.0f} tok/s ETA {}   ", std::string(filled, '#'),
                   std::string(30 - filled, '-'), e.step, steps, e.loss, e.lr, e.tokens_per_s, duration(e.eta_s));
        if (e.step == steps) fmt::print(stderr, "\n");
      } else if (e.step % 10 == 0 || e.step == steps || e.step == 1) {
        fmt::print(stderr, "step {}/{} loss {:.4f} lr {:.2e} grad_norm {:.3f} {:.0f} tok/s elapsed {} ETA {}\n", e.step,
                   steps, e.loss, e.lr, e.grad_norm, e.tokens_per_s, duration(e.elapsed_s), duration(e.eta_s));
      }
    } else if (e.kind == Kind::eval) {
      metrics << nlohmann::json{{"step", e.step}, {"eval_loss", e.eval.loss}, {"eval_perplexity", e.eval.perplexity},
                                {"eval_tokens", e.eval.tokens}}.dump() << "\n";
      fmt::print(stderr, "{}eval at step {}: loss {:.4f} perplexity {:.2f} ({} tokens)\n", terminal ? "\n" : "", e.step,
                 e.eval.loss, e.eval.perplexity, e.eval.tokens);
    } else if (e.kind == Kind::checkpoint) {
      fmt::print(stderr, "{}checkpoint: {}\n", terminal ? "\n" : "", e.checkpoint.string());
    } else {
      fmt::print(stderr, "early stopping at step {}\n", e.step);
    }
    metrics.flush();
  });
  if (stop_at > 0 && trainer.step() == stop_at && stop_at < steps) {
    fmt::print("{}\n", nlohmann::json{{"stopped_at", trainer.step()}, {"out", out}}.dump());
    return 0;
  }
  if (full) {
    models::save_model(m, loaded.tokenizer.get(), out, "hf", DType::f32);
  } else {
    lora::save_peft_adapter(m, "default", config, out);
  }
  nlohmann::ordered_json summary = {{"steps", trainer.step()}, {"train_loss", last_loss},
                                    {"trainable_parameters", trainable}, {"out", out}};
  if (final_eval) {
    summary["eval_loss"] = final_eval->loss;
    summary["eval_perplexity"] = final_eval->perplexity;
  }
  fmt::print("{}\n", summary.dump());
  return 0;
}

}  // namespace loracpp::cli
