#include "train/trainer.h"
#include "io/json_file.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <cmath>
#include <fstream>

#include "autograd/backward.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "ops/tape.h"
#include "train/optimizer.h"

namespace loracpp::train {

namespace {

constexpr std::string_view kPlace = "train";

struct Batch {
  Tensor inputs;           // [n, seq]
  Tensor targets;          // [n, seq], data::kIgnore where no loss
  Tensor attention_mask;   // [n, 1, seq, seq] additive, or undefined when no row holds two examples
  std::int64_t trained = 0;  // targets with loss
};

Batch make_batch(const data::TokenDataset& dataset, const std::vector<std::int64_t>& indices) {
  const std::int64_t seq = dataset.seq_len(), n = static_cast<std::int64_t>(indices.size());
  std::vector<std::int64_t> inputs, targets;
  inputs.reserve(static_cast<std::size_t>(n * seq));
  targets.reserve(static_cast<std::size_t>(n * seq));
  std::vector<std::vector<std::int32_t>> examples;
  bool shared = false;  // some row holds more than one example
  for (auto i : indices) {
    const auto in = dataset.inputs(i), out = dataset.targets(i);
    inputs.insert(inputs.end(), in.begin(), in.end());
    targets.insert(targets.end(), out.begin(), out.end());
    if (dataset.isolates_examples()) {
      examples.push_back(dataset.example_of(i));
      shared |= std::any_of(examples.back().begin(), examples.back().end(), [](std::int32_t e) { return e > 0; });
    }
  }
  Batch batch{Tensor::from_ints(inputs, {n, seq}), Tensor::from_ints(targets, {n, seq}), Tensor(), 0};
  batch.trained = std::count_if(targets.begin(), targets.end(), [](std::int64_t t) { return t != data::kIgnore; });
  if (shared) {
    // Padding (-1) after an example is never seen by its queries (causal), and padded queries
    // see only padding, so no row of scores is entirely masked.
    std::vector<float> mask(static_cast<std::size_t>(n * seq * seq));
    const float blocked = -std::numeric_limits<float>::infinity();
    for (std::int64_t b = 0; b < n; ++b)
      for (std::int64_t q = 0; q < seq; ++q)
        for (std::int64_t k = 0; k < seq; ++k)
          mask[static_cast<std::size_t>((b * seq + q) * seq + k)] =
              examples[static_cast<std::size_t>(b)][static_cast<std::size_t>(q)] ==
                      examples[static_cast<std::size_t>(b)][static_cast<std::size_t>(k)]
                  ? 0.0f
                  : blocked;
    batch.attention_mask = Tensor::from_floats(mask, {n, 1, seq, seq});
  }
  return batch;
}

}  // namespace

EvalResult evaluate(const models::LlamaModel& model, const data::TokenDataset& dataset, std::int64_t batch_size,
                    std::int64_t max_batches) {
  autograd::NoGradGuard no_grad;
  check(batch_size > 0, kPlace, "evaluation batch size must be positive, got {}", batch_size);
  double total = 0;
  std::int64_t tokens = 0, batches = 0;
  for (std::int64_t start = 0; start < dataset.sequences(); start += batch_size) {
    if (max_batches > 0 && batches++ >= max_batches) break;
    std::vector<std::int64_t> indices;
    for (std::int64_t i = start; i < std::min(start + batch_size, dataset.sequences()); ++i) indices.push_back(i);
    const Batch batch = make_batch(dataset, indices);
    if (batch.trained == 0) continue;
    const double loss =
        model.token_loss(batch.inputs, batch.targets, {.attention_mask = batch.attention_mask}, data::kIgnore).item();
    total += loss * static_cast<double>(batch.trained);
    tokens += batch.trained;
  }
  const double mean = total / static_cast<double>(std::max<std::int64_t>(tokens, 1));
  return {mean, std::exp(mean), tokens};
}

Trainer::Trainer(models::LlamaModel& model, std::vector<lora::NamedParameter> params, const data::TokenDataset& train,
                 const data::TokenDataset* validation, TrainOptions options, std::string fingerprint,
                 std::filesystem::path out)
    : model_(model),
      params_(std::move(params)),
      train_(train),
      validation_(validation),
      options_(options),
      fingerprint_(std::move(fingerprint)),
      out_(std::move(out)),
      order_(train.sequences(), options.seed) {
  check(options_.steps > 0, kPlace, "steps must be positive, got {}", options_.steps);
  check(options_.batch_size > 0, kPlace, "batch size must be positive, got {}", options_.batch_size);
  if (options_.micro_batch_size == 0) options_.micro_batch_size = options_.batch_size;
  check(options_.micro_batch_size > 0 && options_.batch_size % options_.micro_batch_size == 0, kPlace,
        "batch size {} must be a multiple of the micro-batch size {}", options_.batch_size, options_.micro_batch_size);
  check(train.seq_len() <= model.config().max_position_embeddings, kPlace,
        "sequence length {} exceeds the model's context of {}", train.seq_len(), model.config().max_position_embeddings);
  check(!params_.empty(), kPlace, "nothing to train");
  std::vector<Tensor> tensors;
  for (const auto& p : params_) tensors.push_back(p.tensor);
  optimizer_ = std::make_unique<AdamW>(tensors, AdamWOptions{options_.lr, options_.beta1, options_.beta2, 1e-8f,
                                                             options_.weight_decay});
}

double Trainer::train_step() {
  const std::int64_t micro_batches = options_.batch_size / options_.micro_batch_size;
  optimizer_->zero_grad();
  std::vector<Batch> batches;
  std::int64_t trained = 0;
  for (std::int64_t micro = 0; micro < micro_batches; ++micro) {
    batches.push_back(make_batch(train_, order_.next(options_.micro_batch_size)));
    trained += batches.back().trained;
  }
  // The step's loss is the mean over every trained target of the batch: each micro-batch's mean
  // is weighted by its share of those targets (equal shares when nothing is masked).
  double loss_sum = 0;
  for (std::int64_t micro = 0; micro < micro_batches; ++micro) {
    const Batch& batch = batches[static_cast<std::size_t>(micro)];
    if (batch.trained == 0) continue;
    const nn::ForwardContext context{
        .training = true,
        .seed = mix64(options_.seed ^ mix64(static_cast<std::uint64_t>(step_ * 1009 + micro))),
        .attention_mask = batch.attention_mask,
        .gradient_checkpointing = options_.gradient_checkpointing};
    const Tensor loss = model_.token_loss(batch.inputs, batch.targets, context, data::kIgnore);
    const float share = static_cast<float>(batch.trained) / static_cast<float>(trained);
    loss_sum += loss.item() * share;
    autograd::backward(ops::scale(loss, share));
  }
  return loss_sum;
}

std::optional<EvalResult> Trainer::run(const std::function<void(const TrainEvent&)>& on_event) {
  const LrSchedule schedule{options_.schedule, options_.lr, options_.warmup_steps, options_.steps, options_.min_lr_ratio};
  std::vector<Tensor> tensors;
  for (const auto& p : params_) tensors.push_back(p.tensor);
  std::optional<EvalResult> last_eval;
  const auto start = std::chrono::steady_clock::now();
  const std::int64_t first_step = step_;
  auto do_eval = [&]() {
    if (!validation_) return false;
    last_eval = evaluate(model_, *validation_, options_.micro_batch_size, options_.eval_batches);
    on_event({.kind = TrainEvent::Kind::eval, .step = step_, .eval = *last_eval});
    if (last_eval->loss < best_eval_) {
      best_eval_ = last_eval->loss;
      evals_without_improvement_ = 0;
    } else {
      ++evals_without_improvement_;
    }
    return options_.early_stopping_patience > 0 && evals_without_improvement_ >= options_.early_stopping_patience;
  };
  while (step_ < options_.steps) {
    const float lr = schedule.lr_at(step_);
    const double loss = train_step();
    check(std::isfinite(loss), kPlace, "the loss became {} at step {}; lower the learning rate", loss, step_);
    const double norm = options_.max_grad_norm > 0 ? clip_grad_norm(tensors, options_.max_grad_norm) : 0.0;
    optimizer_->set_lr(lr);
    optimizer_->step();
    ++step_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double done = static_cast<double>(step_ - first_step);
    const double tokens = done * static_cast<double>(options_.batch_size * train_.seq_len());
    on_event({.kind = TrainEvent::Kind::step, .step = step_, .loss = loss, .lr = lr, .grad_norm = norm,
              .tokens_per_s = tokens / std::max(elapsed, 1e-9), .elapsed_s = elapsed,
              .eta_s = elapsed / done * static_cast<double>(options_.steps - step_)});
    if (options_.save_every > 0 && step_ % options_.save_every == 0 && step_ < options_.steps)
      on_event({.kind = TrainEvent::Kind::checkpoint, .step = step_, .checkpoint = save_checkpoint()});
    if (options_.stop_at > 0 && step_ == options_.stop_at && step_ < options_.steps) {
      on_event({.kind = TrainEvent::Kind::checkpoint, .step = step_, .checkpoint = save_checkpoint()});
      return last_eval;
    }
    if (options_.eval_every > 0 && step_ % options_.eval_every == 0 && step_ < options_.steps && do_eval()) {
      on_event({.kind = TrainEvent::Kind::early_stop, .step = step_});
      return last_eval;
    }
  }
  do_eval();
  return last_eval;
}

std::filesystem::path Trainer::save_checkpoint() const {
  autograd::NoGradGuard no_grad;
  const auto final_dir = out_ / fmt::format("checkpoint-{}", step_);
  const auto temp_dir = out_ / fmt::format(".checkpoint-{}.tmp", step_);
  std::error_code error;
  std::filesystem::remove_all(temp_dir, error);
  std::filesystem::create_directories(temp_dir, error);
  check(std::filesystem::is_directory(temp_dir), kPlace, "cannot create {}: {}", temp_dir.string(), error.message());
  std::vector<std::pair<std::string, Tensor>> params, moments;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    params.emplace_back(params_[i].name, ops::contiguous(params_[i].tensor));
    moments.emplace_back(params_[i].name + ".exp_avg", optimizer_->first_moments()[i]);
    moments.emplace_back(params_[i].name + ".exp_avg_sq", optimizer_->second_moments()[i]);
  }
  io::write_safetensors(temp_dir / "params.safetensors", params);
  io::write_safetensors(temp_dir / "optimizer.safetensors", moments);
  const nlohmann::ordered_json state = {{"step", step_},
                                        {"optimizer_steps", optimizer_->steps()},
                                        {"data_epoch", order_.epoch()},
                                        {"data_offset", order_.offset()},
                                        {"best_eval_loss", best_eval_},
                                        {"evals_without_improvement", evals_without_improvement_},
                                        {"fingerprint", fingerprint_}};
  io::write_file_atomically(temp_dir / "trainer_state.json", [&](std::ostream& out) { out << state.dump(2) << "\n"; });
  std::filesystem::remove_all(final_dir, error);
  std::filesystem::rename(temp_dir, final_dir, error);
  check(!error, kPlace, "cannot move {} into place: {}", final_dir.string(), error.message());
  return final_dir;
}

void Trainer::resume(const std::filesystem::path& checkpoint) {
  const auto state_path = checkpoint / "trainer_state.json";
  check(std::filesystem::exists(state_path), kPlace, "{} is not a checkpoint: trainer_state.json is missing",
        checkpoint.string());
  const nlohmann::json state = io::read_json_file(state_path, kPlace);
  check(state.value("fingerprint", std::string()) == fingerprint_, kPlace,
        "checkpoint {} was made by a run of another configuration; its settings: {}", checkpoint.string(),
        state.value("fingerprint", std::string("?")));
  const auto params = io::read_safetensors(checkpoint / "params.safetensors");
  const auto moments = io::read_safetensors(checkpoint / "optimizer.safetensors");
  std::map<std::string, Tensor> saved(params.tensors.begin(), params.tensors.end());
  std::map<std::string, Tensor> saved_moments(moments.tensors.begin(), moments.tensors.end());
  std::vector<Tensor> m, v;
  autograd::NoGradGuard no_grad;
  for (auto& p : params_) {
    const auto it = saved.find(p.name);
    check(it != saved.end() && it->second.shape() == p.tensor.shape(), kPlace,
          "checkpoint {} lacks parameter '{}' of shape {}", checkpoint.string(), p.name, shape_str(p.tensor.shape()));
    ops::assign(p.tensor, ops::to_dtype(it->second, p.tensor.dtype()));
    check(saved_moments.count(p.name + ".exp_avg") && saved_moments.count(p.name + ".exp_avg_sq"), kPlace,
          "checkpoint {} lacks the optimiser state of '{}'", checkpoint.string(), p.name);
    m.push_back(saved_moments.at(p.name + ".exp_avg"));
    v.push_back(saved_moments.at(p.name + ".exp_avg_sq"));
  }
  optimizer_->restore(state.at("optimizer_steps").get<std::int64_t>(), m, v);
  step_ = state.at("step").get<std::int64_t>();
  order_.seek(state.at("data_epoch").get<std::int64_t>(), state.at("data_offset").get<std::int64_t>());
  best_eval_ = state.at("best_eval_loss").get<double>();
  evals_without_improvement_ = state.at("evals_without_improvement").get<std::int64_t>();
}

}  // namespace loracpp::train
