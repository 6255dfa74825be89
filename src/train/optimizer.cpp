#include "train/optimizer.h"

#include <cmath>

#include "backend/kernels.h"

namespace loracpp::train {

namespace {
void check_params(const std::vector<Tensor>& params, std::string_view place) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    check(params[i].defined() && params[i].dtype() == DType::f32 && params[i].is_contiguous(), place,
          "parameter {} must be a contiguous f32 tensor (master weights are f32)", i);
    check(!params[i].read_only(), place, "parameter {} is read-only (a memory-mapped frozen weight)", i);
  }
}

Tensor f32_grad(const Tensor& param, std::size_t index, std::string_view place) {
  Tensor grad = param.grad();
  if (!grad.defined()) return grad;
  check(grad.dtype() == DType::f32 && grad.is_contiguous() && grad.shape() == param.shape(), place,
        "gradient of parameter {} must be contiguous f32 of shape {}", index, shape_str(param.shape()));
  return grad;
}

std::vector<Tensor> zeros_like(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const auto& p : params) out.push_back(Tensor::zeros(p.shape(), DType::f32, p.device()));
  return out;
}
}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params, float lr) : params_(std::move(params)), lr_(lr) {}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.impl().grad.reset();
}

AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& options)
    : Optimizer(std::move(params), options.lr), options_(options) {
  check_params(params_, "adamw");
  check(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1, "adamw",
        "betas must be in [0, 1), got {} and {}", options.beta1, options.beta2);
  check(options.eps > 0, "adamw", "eps must be positive, got {}", options.eps);
  m_ = zeros_like(params_);
  v_ = zeros_like(params_);
}

void AdamW::step() {
  ++steps_;
  const auto t = static_cast<double>(steps_);
  const auto bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(options_.beta1), t));
  const auto bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(options_.beta2), t));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor grad = f32_grad(params_[i], i, "adamw");
    if (!grad.defined()) continue;
    LORACPP_KERNEL(params_[i].device(), adamw_update)(params_[i].mutable_data<float>(), grad.data<float>(),
                                                      m_[i].mutable_data<float>(), v_[i].mutable_data<float>(),
                                                      params_[i].numel(), lr_, options_.beta1, options_.beta2,
                                                      options_.eps, options_.weight_decay, bc1, bc2);
  }
}

void AdamW::restore(std::int64_t steps, const std::vector<Tensor>& m, const std::vector<Tensor>& v) {
  check(steps >= 0 && m.size() == m_.size() && v.size() == v_.size(), "adamw",
        "saved state has {} and {} moments for {} parameters", m.size(), v.size(), m_.size());
  for (std::size_t i = 0; i < m_.size(); ++i) {
    check(m[i].shape() == m_[i].shape() && v[i].shape() == v_[i].shape() && m[i].dtype() == DType::f32 &&
              v[i].dtype() == DType::f32,
          "adamw", "saved moments of parameter {} must be f32 {}", i, shape_str(m_[i].shape()));
    for (auto [dst, src] : {std::pair{&m_[i], &m[i]}, std::pair{&v_[i], &v[i]}}) {
      const Tensor host = Tensor::from_floats(src->to_floats(), src->shape());  // contiguous, any device
      Storage::copy(*host.storage(), 0, *dst->storage(), dst->byte_offset(), host.storage()->nbytes());
    }
  }
  steps_ = steps;
}

Sgd::Sgd(std::vector<Tensor> params, const SgdOptions& options)
    : Optimizer(std::move(params), options.lr), options_(options) {
  check_params(params_, "sgd");
  check(!options.nesterov || (options.momentum > 0 && options.dampening == 0), "sgd",
        "nesterov needs momentum > 0 and dampening 0");
  if (options.momentum != 0.0f) momentum_ = zeros_like(params_);
}

void Sgd::step() {
  const bool first = steps_ == 0;
  ++steps_;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor grad = f32_grad(params_[i], i, "sgd");
    if (!grad.defined()) continue;
    LORACPP_KERNEL(params_[i].device(), sgd_update)(
        params_[i].mutable_data<float>(), grad.data<float>(),
        momentum_.empty() ? nullptr : momentum_[i].mutable_data<float>(), params_[i].numel(), lr_,
        options_.momentum, options_.dampening, options_.weight_decay, options_.nesterov, first);
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  double total = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Tensor grad = f32_grad(params[i], i, "clip_grad_norm");
    if (grad.defined()) total += LORACPP_KERNEL(grad.device(), sum_squares)(grad.data<float>(), grad.numel());
  }
  const double norm = std::sqrt(total);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1.0) {
    for (const auto& p : params) {
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      float* g = grad.mutable_data<float>();
      LORACPP_KERNEL(grad.device(), scale)(g, static_cast<float>(coefficient), g, grad.numel());
    }
  }
  return norm;
}

}  // namespace loracpp::train
