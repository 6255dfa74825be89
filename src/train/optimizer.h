#pragma once
// Optimisers over f32 parameters (the master weights of adapters), their gradient clipping.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace loracpp::train {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params, float lr);
  virtual ~Optimizer() = default;
  // Updates every parameter that has a gradient; parameters without one are left alone.
  virtual void step() = 0;
  void zero_grad();
  float lr() const { return lr_; }
  void set_lr(float lr) { lr_ = lr; }
  std::int64_t steps() const { return steps_; }
  const std::vector<Tensor>& params() const { return params_; }

 protected:
  std::vector<Tensor> params_;
  float lr_;
  std::int64_t steps_ = 0;
};

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

// Adam with decoupled weight decay and bias correction, as PyTorch's torch.optim.AdamW.
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, const AdamWOptions& options);
  void step() override;
  const std::vector<Tensor>& first_moments() const { return m_; }
  const std::vector<Tensor>& second_moments() const { return v_; }
  // Restores a saved state (for resuming): the step count and both moments, shapes checked.
  void restore(std::int64_t steps, const std::vector<Tensor>& m, const std::vector<Tensor>& v);

 private:
  AdamWOptions options_;
  std::vector<Tensor> m_, v_;
};

struct SgdOptions {
  float lr = 1e-2f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

// SGD with optional momentum, dampening, L2 weight decay and Nesterov, as PyTorch's torch.optim.SGD.
class Sgd : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, const SgdOptions& options);
  void step() override;

 private:
  SgdOptions options_;
  std::vector<Tensor> momentum_;
};

// Scales all gradients so that their global L2 norm is at most max_norm (as PyTorch's
// clip_grad_norm_, with its 1e-6 guard); returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace loracpp::train
