// `lora demo`: the LoRA contract on one frozen layer. A base weight W is frozen; the task's true
// weight is W + a rank-r change; only A [r, in] and B [out, r] train, and the loss falls to ~0.
#include <chrono>
#include <fmt/core.h>

#include "cli/commands.h"
#include "loracpp/loracpp.h"

namespace loracpp::cli {

void DemoCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("demo", "Train a LoRA adapter on a frozen linear layer (synthetic task)");
  app->add_option("--steps", steps, "Optimiser steps")->check(CLI::PositiveNumber);
  app->add_option("--rank", rank, "Adapter rank r")->check(CLI::PositiveNumber);
  app->add_option("--seed", seed, "Random seed");
}

int DemoCommand::run() {
  const DemoCommand& options = *this;
  using namespace ops;
  const std::int64_t in = 64, out = 48, batch = 128, r = options.rank;
  Rng rng(options.seed);
  const Tensor w = randn({out, in}, rng, DType::f32, 0.1f);  // frozen base weight
  const Tensor delta = matmul(randn({out, r}, rng, DType::f32, 0.3f), randn({r, in}, rng, DType::f32, 0.3f));
  const Tensor target_w = add(w, delta);
  // PEFT's init: A Kaiming-uniform (bound 1/sqrt(in)), B zero, so the adapter starts as a no-op.
  const float bound = 1.0f / std::sqrt(static_cast<float>(in));
  Tensor a = rand_uniform({r, in}, rng, -bound, bound).set_requires_grad();
  Tensor b = Tensor::zeros({out, r}).set_requires_grad();
  const float lora_scale = 2.0f;  // alpha / r with alpha = 2r
  train::AdamW optimizer({a, b}, {.lr = 1e-2f, .weight_decay = 0.0f});
  train::LrSchedule schedule{train::ScheduleKind::cosine, 1e-2f, options.steps / 10, options.steps, 0.0f};

  const auto start = std::chrono::steady_clock::now();
  float loss_value = 0;
  for (int step = 0; step < options.steps; ++step) {
    const Tensor x = randn({batch, in}, rng);
    Tensor target;
    {
      autograd::NoGradGuard no_grad;
      target = linear(x, target_w);
    }
    const Tensor y = add(linear(x, w), scale(linear(linear(x, a), b), lora_scale));
    const Tensor diff = sub(y, target);
    const Tensor loss = mean(mul(diff, diff));
    optimizer.zero_grad();
    autograd::backward(loss);
    train::clip_grad_norm({a, b}, 1.0);
    optimizer.set_lr(schedule.lr_at(step));
    optimizer.step();
    loss_value = loss.item();
    if (step % 20 == 0 || step + 1 == options.steps)
      fmt::print("step {:4d}  loss {:.6f}  lr {:.2e}\n", step, loss_value, schedule.lr_at(step));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("trained {} adapter parameters (r={}) against {} frozen in {:.2f}s; final loss {:.6f}\n",
             r * (in + out), r, in * out, seconds, loss_value);
  return 0;
}

}  // namespace loracpp::cli
