#include "lora/adapter.h"
#include "io/json_file.h"

#include <cmath>
#include <fstream>
#include <regex>
#include <set>

#include "core/random.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "ops/tape.h"

namespace loracpp::lora {

namespace {

constexpr std::string_view kPlace = "lora";
const std::string kPrefix = "base_model.model.";
const std::string kEmbed = "model.embed_tokens";

// A trainable copy in owned f32 memory (frozen weights may be read-only file mappings).
Tensor owned_f32(const Tensor& t) {
  autograd::NoGradGuard no_grad;
  return ops::scale(ops::to_dtype(t, DType::f32), 1.0f);
}

bool targets_embedding(const LoraConfig& c) {
  if (c.all_linear) return false;
  if (!c.target_regex.empty()) return std::regex_match(kEmbed, std::regex(c.target_regex));
  for (const auto& name : c.target_modules)
    if (name == "embed_tokens" || name == kEmbed) return true;
  return false;
}

// scale * B @ A in the weight's layout ([out, in], or [vocab, dim] for the embedding).
Tensor delta_of(const nn::LoraBranch& b, bool embedding) {
  const Tensor a = ops::to_dtype(b.a, DType::f32), bm = ops::to_dtype(b.b, DType::f32);
  const Tensor product = ops::matmul(bm, a);  // [out, in] or [dim, vocab]
  return ops::scale(embedding ? ops::contiguous(ops::transpose(product, 0, 1)) : product, b.effective_scale());
}

std::vector<std::string> saved_module_weights(const models::LlamaModel& model, const LoraConfig& config) {
  std::vector<std::string> out;
  for (const auto& module : config.modules_to_save) {
    bool found = false;
    for (const auto& [name, t] : model.weights()) {
      const std::string path = name.substr(0, name.rfind('.'));
      if (path == module || path.ends_with("." + module)) {
        out.push_back(name);
        found = true;
      }
    }
    check(found, kPlace, "modules_to_save names '{}', which the model does not have", module);
  }
  return out;
}

std::vector<std::string> trainable_biases(const models::LlamaModel& model, const std::string& adapter,
                                          const LoraConfig& config) {
  std::vector<std::string> out;
  if (config.bias == "none") return out;
  for (const auto& [name, t] : model.weights()) {
    if (!name.ends_with(".bias")) continue;
    const std::string module = name.substr(0, name.size() - 5);
    const auto it = model.adapters().find(module);
    bool adapted = false;
    if (it != model.adapters().end())
      for (const auto& b : it->second) adapted |= b.adapter == adapter;
    if (config.bias == "all" || adapted) out.push_back(name);
  }
  return out;
}

}  // namespace

void attach_adapter(models::LlamaModel& model, const std::string& name, const LoraConfig& config, std::uint64_t seed) {
  config.validate("adapter '" + name + "'");
  for (const auto& existing : adapter_names(model))
    check(existing != name, kPlace, "the model already has an adapter named '{}'", name);
  const DType dtype = model.dtype();
  std::size_t attached = 0;
  auto module_rng = [&](const std::string& path) { return Rng(mix64(seed ^ std::hash<std::string>{}(path))); };
  for (const auto& module : model.linear_modules()) {
    if (!config.targets(module)) continue;
    check(module.kind != "lm_head" || !model.config().tie_word_embeddings, kPlace,
          "lm_head shares its weight with the embedding in this model and cannot carry its own adapter");
    const std::int64_t r = config.rank_for(module.path);
    Rng rng = module_rng(module.path);
    nn::LoraBranch b;
    b.adapter = name;
    if (config.init_lora_weights == "gaussian") {
      b.a = randn({r, module.in_features}, rng, DType::f32, 1.0f / static_cast<float>(r));
    } else if (config.init_lora_weights == "zeros") {
      b.a = Tensor::zeros({r, module.in_features});
    } else {  // PEFT's default: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in))
      const float bound = 1.0f / std::sqrt(static_cast<float>(module.in_features));
      b.a = rand_uniform({r, module.in_features}, rng, -bound, bound);
    }
    b.b = Tensor::zeros({module.out_features, r});
    if (dtype != DType::f32) {
      b.a = ops::to_dtype(b.a, dtype);
      b.b = ops::to_dtype(b.b, dtype);
    }
    b.scale = config.scale_for(module.path);
    b.dropout = config.lora_dropout;
    model.adapter_slot(module.path).push_back(std::move(b));
    ++attached;
  }
  if (targets_embedding(config)) {
    const std::int64_t r = config.rank_for(kEmbed);
    const Tensor& w = model.weight(kEmbed + ".weight");
    Rng rng = module_rng(kEmbed);
    nn::LoraBranch b;
    b.adapter = name;
    b.a = Tensor::zeros({r, w.size(0)}, dtype);  // PEFT: A zero, B normal for embeddings
    b.b = randn({w.size(1), r}, rng, dtype);
    b.scale = config.scale_for(kEmbed);
    model.adapter_slot(kEmbed).push_back(std::move(b));
    ++attached;
  }
  check(attached > 0, kPlace, "target_modules matched no module; the model's modules are {} (and embed_tokens)",
        fmt::join(models::LlamaModel::target_modules(), ", "));
  // Trainable copies stay f32 whatever dtype the frozen weights are stored in (bf16 on the bf16 path).
  for (const auto& weight : saved_module_weights(model, config))
    model.mutable_weights().at(weight) = owned_f32(model.weight(weight));
  for (const auto& bias : trainable_biases(model, name, config))
    model.mutable_weights().at(bias) = owned_f32(model.weight(bias));
}

void remove_adapter(models::LlamaModel& model, const std::string& name) {
  for (auto& [module, branches] : model.mutable_adapters())
    std::erase_if(branches, [&](const nn::LoraBranch& b) { return b.adapter == name; });
}

std::vector<std::string> adapter_names(const models::LlamaModel& model) {
  std::set<std::string> names;
  for (const auto& [module, branches] : model.adapters())
    for (const auto& b : branches) names.insert(b.adapter);
  return {names.begin(), names.end()};
}

std::vector<NamedParameter> adapter_parameters(const models::LlamaModel& model, const std::string& name,
                                               const LoraConfig& config) {
  std::vector<NamedParameter> out;
  for (const auto& [module, branches] : model.adapters()) {
    for (const auto& b : branches) {
      if (b.adapter != name) continue;
      const bool embedding = module == kEmbed;
      Tensor a = b.a, bm = b.b;
      check(a.dtype() == DType::f32 && bm.dtype() == DType::f32, kPlace,
            "adapter '{}' on {} is {}; training needs f32 adapters (an f32 base model)", name, module,
            dtype_name(a.dtype()));
      a.set_requires_grad();
      bm.set_requires_grad();
      out.push_back({module + (embedding ? ".lora_embedding_A" : ".lora_A.weight"), a});
      out.push_back({module + (embedding ? ".lora_embedding_B" : ".lora_B.weight"), bm});
    }
  }
  check(!out.empty(), kPlace, "the model has no adapter named '{}'", name);
  std::vector<std::string> full = trainable_biases(model, name, config);
  const auto saved = saved_module_weights(model, config);
  full.insert(full.end(), saved.begin(), saved.end());
  for (const auto& weight : full) {
    Tensor t = model.weight(weight);
    check(t.dtype() == DType::f32 && !t.read_only(), kPlace, "'{}' must be an owned f32 tensor to train", weight);
    t.set_requires_grad();
    out.push_back({weight, t});
  }
  return out;
}

void save_peft_adapter(const models::LlamaModel& model, const std::string& name, const LoraConfig& config,
                       const std::filesystem::path& folder) {
  for (const auto& [module, branches] : model.adapters())
    for (const auto& b : branches)
      if (b.adapter == name)
        check(b.rank() == config.rank_for(module) && std::abs(b.scale - config.scale_for(module)) <= 1e-6f * std::abs(b.scale),
              kPlace, "adapter '{}' on {} has r = {} and scale {}, but its config gives r = {} and scale {}", name, module,
              b.rank(), b.scale, config.rank_for(module), config.scale_for(module));
  std::vector<std::pair<std::string, Tensor>> tensors;
  {
    autograd::NoGradGuard no_grad;
    for (auto& p : adapter_parameters(model, name, config))
      tensors.emplace_back(kPrefix + p.name, ops::contiguous(p.tensor));
  }
  std::error_code error;
  std::filesystem::create_directories(folder, error);
  check(std::filesystem::is_directory(folder), kPlace, "cannot create folder {}: {}", folder.string(), error.message());
  io::write_safetensors(folder / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  io::write_file_atomically(folder / "adapter_config.json",
                            [&](std::ostream& out) { out << config.to_json().dump(2) << "\n"; });
}

LoraConfig load_peft_adapter(models::LlamaModel& model, const std::string& name, const std::filesystem::path& folder,
                             float weight) {
  const auto config_path = folder / "adapter_config.json";
  const auto weights_path = folder / "adapter_model.safetensors";
  check(std::filesystem::exists(config_path), kPlace, "{} is missing", config_path.string());
  check(std::filesystem::exists(weights_path), kPlace, "{} is missing", weights_path.string());
  const LoraConfig config = LoraConfig::from_json(io::read_json_file(config_path, kPlace), config_path.string());
  for (const auto& existing : adapter_names(model))
    check(existing != name, kPlace, "the model already has an adapter named '{}'", name);
  const auto file = io::read_safetensors(weights_path);
  const std::string source = weights_path.string();
  std::map<std::string, nn::LoraBranch> branches;
  std::vector<std::pair<std::string, Tensor>> full;
  std::map<std::string, models::LinearModule> modules;
  for (const auto& m : model.linear_modules()) modules[m.path] = m;
  const DType dtype = model.dtype();
  for (const auto& [key, tensor] : file.tensors) {
    check(key.starts_with(kPrefix), kPlace, "tensor '{}' does not start with '{}' ({})", key, kPrefix, source);
    const std::string rest = key.substr(kPrefix.size());
    auto ends = [&](const std::string& suffix) { return rest.ends_with(suffix) ? rest.substr(0, rest.size() - suffix.size()) : std::string(); };
    std::string module;
    bool is_a = false;
    if (!(module = ends(".lora_A.weight")).empty()) {
      is_a = true;
    } else if (!(module = ends(".lora_B.weight")).empty()) {
    } else if (!(module = ends(".lora_embedding_A")).empty()) {
      is_a = true;
    } else if (!(module = ends(".lora_embedding_B")).empty()) {
    } else {
      const auto& weights = model.weights();
      const auto it = weights.find(rest);
      check(it != weights.end(), kPlace, "tensor '{}' names nothing in the base model ({})", key, source);
      check(it->second.shape() == tensor.shape(), kPlace, "tensor '{}' has shape {}, the base model's is {} ({})", key,
            shape_str(tensor.shape()), shape_str(it->second.shape()), source);
      full.emplace_back(rest, tensor);
      continue;
    }
    const bool embedding = module == kEmbed;
    check(embedding || modules.count(module), kPlace, "tensor '{}' is for module '{}', which the base model lacks ({})",
          key, module, source);
    check(tensor.dim() == 2, kPlace, "tensor '{}' must be a matrix, got {} ({})", key, shape_str(tensor.shape()), source);
    auto& b = branches[module];
    (is_a ? b.a : b.b) = tensor.dtype() == dtype ? tensor : ops::to_dtype(tensor, dtype);
  }
  check(!branches.empty(), kPlace, "{} holds no LoRA tensors", source);
  const auto& c = model.config();
  for (auto& [module, b] : branches) {
    check(b.a.defined() && b.b.defined(), kPlace, "module '{}' has only one of its A and B matrices ({})", module, source);
    const std::int64_t in = module == kEmbed ? c.vocab_size : modules.at(module).in_features;
    const std::int64_t out = module == kEmbed ? c.hidden_size : modules.at(module).out_features;
    const std::int64_t r = config.rank_for(module);
    check(b.a.shape() == Shape{r, in} && b.b.shape() == Shape{out, r}, kPlace,
          "module '{}' needs A [{}, {}] and B [{}, {}] for this base model and r = {}, got A {} and B {} ({})", module,
          r, in, out, r, r, shape_str(b.a.shape()), shape_str(b.b.shape()), source);
    b.adapter = name;
    b.scale = config.scale_for(module);
    b.dropout = config.lora_dropout;
    b.weight = weight;
  }
  for (auto& [module, b] : branches) model.adapter_slot(module).push_back(std::move(b));
  for (const auto& [weight_name, tensor] : full) model.set_weight(weight_name, owned_f32(tensor));
  return config;
}

void merge_adapter(models::LlamaModel& model, const std::string& name, bool safe) {
  autograd::NoGradGuard no_grad;
  std::vector<std::pair<std::string, Tensor>> merged;
  std::vector<nn::LoraBranch*> done;
  for (auto& [module, branches] : model.mutable_adapters()) {
    for (auto& b : branches) {
      if (b.adapter != name || b.merged) continue;
      const std::string weight = module + ".weight";
      const Tensor updated = ops::add(ops::to_dtype(model.weight(weight), DType::f32), delta_of(b, module == kEmbed));
      if (safe) {
        for (float v : updated.to_floats())
          check(std::isfinite(v), kPlace, "merging adapter '{}' makes {} non-finite; nothing was merged", name, weight);
      }
      merged.emplace_back(weight, updated);
      done.push_back(&b);
    }
  }
  check(!done.empty(), kPlace, "the model has no unmerged adapter named '{}'", name);
  for (const auto& [weight, value] : merged) model.set_weight(weight, value);
  for (auto* b : done) b->merged = true;
}

void unmerge_adapter(models::LlamaModel& model, const std::string& name) {
  autograd::NoGradGuard no_grad;
  bool any = false;
  for (auto& [module, branches] : model.mutable_adapters()) {
    for (auto& b : branches) {
      if (b.adapter != name || !b.merged) continue;
      const std::string weight = module + ".weight";
      model.set_weight(weight, ops::sub(ops::to_dtype(model.weight(weight), DType::f32), delta_of(b, module == kEmbed)));
      b.merged = false;
      any = true;
    }
  }
  check(any, kPlace, "the model has no merged adapter named '{}'", name);
}

LoraConfig combine_adapters(models::LlamaModel& model, const std::vector<std::string>& names,
                            const std::vector<float>& weights, const std::string& combined) {
  autograd::NoGradGuard no_grad;
  check(!names.empty() && names.size() == weights.size(), kPlace, "combine needs one weight per adapter, got {} and {}",
        names.size(), weights.size());
  for (const auto& existing : adapter_names(model))
    check(existing != combined, kPlace, "the model already has an adapter named '{}'", combined);
  std::map<std::string, std::int64_t> ranks;
  for (auto& [module, branches] : model.mutable_adapters()) {
    std::vector<Tensor> as, bs;
    for (std::size_t i = 0; i < names.size(); ++i)
      for (const auto& b : branches)
        if (b.adapter == names[i]) {
          check(!b.merged, kPlace, "adapter '{}' is merged; unmerge it before combining", names[i]);
          as.push_back(b.a);
          bs.push_back(ops::scale(b.b, b.scale * weights[i]));
        }
    if (as.empty()) continue;
    nn::LoraBranch b;
    b.adapter = combined;
    b.a = ops::concat(as, 0);  // [sum r, in]
    b.b = ops::concat(bs, 1);  // [out, sum r]
    b.scale = 1.0f;
    ranks[module] = b.rank();
    branches.push_back(std::move(b));
  }
  check(!ranks.empty(), kPlace, "none of the adapters {} is on the model", fmt::join(names, ", "));
  // Scale 1 everywhere: alpha = r per module; the most common rank is r, the others are patterns.
  LoraConfig config;
  config.target_modules.clear();
  std::map<std::int64_t, int> counts;
  for (const auto& [module, r] : ranks) ++counts[r];
  config.r = std::max_element(counts.begin(), counts.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
  config.lora_alpha = static_cast<float>(config.r);
  for (const auto& [module, r] : ranks) {
    config.target_modules.push_back(module);
    if (r != config.r) {
      config.rank_pattern[module] = r;
      config.alpha_pattern[module] = static_cast<float>(r);
    }
  }
  return config;
}

}  // namespace loracpp::lora
