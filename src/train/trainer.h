#pragma once
// The training loop: micro-batches with gradient accumulation, clipping, a learning-rate
// schedule, evaluation on a validation set, early stopping, and checkpoints that resume bit for
// bit (parameters, optimiser moments, step, data position; written atomically).
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "lora/adapter.h"
#include "models/llama.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace loracpp::train {

struct TrainOptions {
  std::int64_t steps = 100;
  std::int64_t batch_size = 16;       // sequences per optimiser step
  std::int64_t micro_batch_size = 0;  // sequences per forward/backward pass; 0: the whole batch
  float lr = 1e-3f;
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float max_grad_norm = 1.0f;  // 0: no clipping
  ScheduleKind schedule = ScheduleKind::cosine;
  std::int64_t warmup_steps = 0;
  float min_lr_ratio = 0.0f;
  std::int64_t eval_every = 0;    // 0: only at the end
  std::int64_t eval_batches = 0;  // 0: the whole validation set
  std::int64_t early_stopping_patience = 0;  // evaluations without improvement before stopping; 0: never
  std::int64_t save_every = 0;    // checkpoint every N steps; 0: never
  std::int64_t stop_at = 0;       // stop early at this step with a checkpoint (as if interrupted); 0: never
  std::uint64_t seed = 0;
  bool gradient_checkpointing = false;  // decoder layers recomputed in the backward pass (less memory)
};

struct EvalResult {
  double loss = 0;
  double perplexity = 0;
  std::int64_t tokens = 0;
};

// Token-weighted mean next-token loss over the dataset (or its first max_batches batches).
EvalResult evaluate(const models::LlamaModel& model, const data::TokenDataset& dataset, std::int64_t batch_size,
                    std::int64_t max_batches = 0);

struct TrainEvent {
  enum class Kind { step, eval, checkpoint, early_stop } kind;
  std::int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0, eta_s = 0;
  EvalResult eval{};
  std::filesystem::path checkpoint{};
};

class Trainer {
 public:
  // params: what trains (adapters, or every weight for full training); fingerprint: a description
  // of the run's configuration that a resumed checkpoint must match.
  Trainer(models::LlamaModel& model, std::vector<lora::NamedParameter> params, const data::TokenDataset& train,
          const data::TokenDataset* validation, TrainOptions options, std::string fingerprint,
          std::filesystem::path out);

  // Restores a checkpoint folder written by this trainer; refuses one of another configuration.
  void resume(const std::filesystem::path& checkpoint);
  // Runs to options.steps (or early stopping); returns the last evaluation, if any.
  std::optional<EvalResult> run(const std::function<void(const TrainEvent&)>& on_event);
  std::int64_t step() const { return step_; }
  // Writes checkpoint-<step>/ under the output folder (atomically) and returns its path.
  std::filesystem::path save_checkpoint() const;

 private:
  double train_step();
  models::LlamaModel& model_;
  std::vector<lora::NamedParameter> params_;
  const data::TokenDataset& train_;
  const data::TokenDataset* validation_;
  TrainOptions options_;
  std::string fingerprint_;
  std::filesystem::path out_;
  std::unique_ptr<AdamW> optimizer_;
  data::BatchOrder order_;
  std::int64_t step_ = 0;
  double best_eval_ = 1e30;
  std::int64_t evals_without_improvement_ = 0;
};

}  // namespace loracpp::train
