// AdamW, SGD, gradient clipping and schedules against PyTorch trajectories
// (tests/fixtures/optim.json, made by tools/make_optim_fixtures.py).
#include <memory>

#include "test_util.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace loracpp::train {
namespace {

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, const nlohmann::json& o,
                                          std::vector<Tensor> params) {
  if (name.rfind("adamw", 0) == 0)
    return std::make_unique<AdamW>(std::move(params), AdamWOptions{o["lr"], o["beta1"], o["beta2"], o["eps"],
                                                                   o["weight_decay"]});
  return std::make_unique<Sgd>(std::move(params),
                               SgdOptions{o["lr"], o["momentum"], o["dampening"], o["weight_decay"], o["nesterov"]});
}

TEST(Optimizers, FollowTorchTrajectories) {
  const auto fixture = testing::load_fixture("optim.json");
  ASSERT_EQ(fixture["runs"].size(), 5u);
  for (const auto& run : fixture["runs"]) {
    const std::string name = run["name"];
    SCOPED_TRACE(name);
    std::vector<Tensor> params;
    for (std::size_t i = 0; i < run["shapes"].size(); ++i) {
      Tensor p = Tensor::from_floats(run["initial"][i].get<std::vector<float>>(), run["shapes"][i].get<Shape>());
      params.push_back(p.set_requires_grad());
    }
    auto optimizer = make_optimizer(name, run["options"], params);
    const auto& s = run["schedule"];
    const LrSchedule schedule{parse_schedule_kind(s["kind"].get<std::string>()), run["options"]["lr"], s["warmup"],
                              s["total"], s["min_lr_ratio"]};
    for (std::size_t step = 0; step < run["grads"].size(); ++step) {
      for (std::size_t i = 0; i < params.size(); ++i)
        params[i].set_grad(Tensor::from_floats(run["grads"][step][i].get<std::vector<float>>(), params[i].shape()));
      if (!run["max_norm"].is_null()) {
        const double norm = clip_grad_norm(params, run["max_norm"].get<double>());
        EXPECT_NEAR(norm, run["norms"][step].get<double>(), 1e-5 * norm) << "step " << step;
      }
      const float lr = schedule.lr_at(static_cast<std::int64_t>(step));
      EXPECT_NEAR(lr, run["lrs"][step].get<double>(), 1e-7) << "lr at step " << step;
      optimizer->set_lr(lr);
      optimizer->step();
      for (std::size_t i = 0; i < params.size(); ++i)
        ASSERT_TRUE(testing::all_close(params[i].to_floats(), run["params"][step][i].get<std::vector<double>>(), 2e-6,
                                       2e-5))
            << "parameter " << i << " after step " << step;
    }
  }
}

TEST(Optimizers, ParametersWithoutGradientsAreLeftAlone) {
  Tensor a = Tensor::full({3}, 1.0f).set_requires_grad();
  Tensor b = Tensor::full({2}, 2.0f).set_requires_grad();
  AdamW optimizer({a, b}, {.lr = 0.1f});
  a.set_grad(Tensor::full({3}, 1.0f));
  optimizer.step();
  EXPECT_LT(a.to_floats()[0], 1.0f);
  EXPECT_EQ(b.to_floats(), (std::vector<float>{2.0f, 2.0f}));
  optimizer.zero_grad();
  EXPECT_FALSE(a.grad().defined());
}

TEST(Optimizers, RejectNonF32Parameters) {
  Tensor p = Tensor::zeros({2}, DType::bf16);
  EXPECT_TRUE(testing::throws_with_prefix([&] { AdamW({p}, {}); }, "[adamw] parameter 0 must be a contiguous f32"));
}

TEST(Schedules, WarmupThenDecayShapes) {
  const LrSchedule cosine{ScheduleKind::cosine, 1.0f, 10, 110, 0.0f};
  EXPECT_FLOAT_EQ(cosine.lr_at(0), 0.0f);
  EXPECT_FLOAT_EQ(cosine.lr_at(5), 0.5f);
  EXPECT_FLOAT_EQ(cosine.lr_at(10), 1.0f);
  EXPECT_NEAR(cosine.lr_at(60), 0.5f, 1e-6);
  EXPECT_NEAR(cosine.lr_at(110), 0.0f, 1e-6);
  EXPECT_NEAR(cosine.lr_at(500), 0.0f, 1e-6);  // past the end it stays at the floor
  const LrSchedule linear{ScheduleKind::linear, 2.0f, 0, 4, 0.5f};
  EXPECT_FLOAT_EQ(linear.lr_at(2), 1.5f);
  EXPECT_FLOAT_EQ(linear.lr_at(4), 1.0f);
  EXPECT_TRUE(testing::throws_with_prefix([] { parse_schedule_kind("step"); }, "[schedule] unknown schedule 'step'"));
}

}  // namespace
}  // namespace loracpp::train
