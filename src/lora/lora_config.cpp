#include "lora/lora_config.h"

#include <cmath>
#include <regex>
#include <set>

namespace loracpp::lora {

namespace {

// PEFT matches a pattern key against a module path as re.match(rf"(.*\.)?{key}$", path).
template <class Map>
auto pattern_value(const Map& patterns, const std::string& path) -> const typename Map::mapped_type* {
  for (const auto& [key, value] : patterns)
    if (std::regex_match(path, std::regex("(.*\\.)?" + key))) return &value;
  return nullptr;
}

bool name_matches(const std::string& path, const std::string& name) {
  return path == name || (path.size() > name.size() && path.ends_with(name) && path[path.size() - name.size() - 1] == '.');
}

}  // namespace

LoraConfig LoraConfig::from_json(const nlohmann::json& j, const std::string& file) {
  check(j.is_object(), "lora", "{} must hold a JSON object", file);
  static const std::set<std::string> known = {
      "r", "lora_alpha", "lora_dropout", "target_modules", "layers_to_transform", "rank_pattern", "alpha_pattern",
      "use_rslora", "init_lora_weights", "bias", "modules_to_save", "task_type", "base_model_name_or_path",
      "peft_type", "inference_mode", "revision", "auto_mapping", "layers_pattern", "fan_in_fan_out", "use_dora",
      "loftq_config", "megatron_config", "megatron_core", "layer_replication", "exclude_modules", "lora_bias",
      "use_qalora", "qalora_group_size", "target_parameters", "trainable_token_indices", "corda_config",
      "eva_config", "runtime_config", "layer_replication"};
  LoraConfig c;
  auto field = [&](const char* key) -> const nlohmann::json* {
    return j.contains(key) && !j[key].is_null() ? &j[key] : nullptr;
  };
  auto bad = [&](const char* key, const char* expected) {
    fail("lora", "field '{}' must be {}, got {} ({})", key, expected, j[key].dump(), file);
  };
  for (const auto& [key, value] : j.items())
    check(known.count(key), "lora", "unknown field '{}'; LoRA adapter configs have r, lora_alpha, lora_dropout, "
          "target_modules, layers_to_transform, rank_pattern, alpha_pattern, use_rslora, init_lora_weights, bias, "
          "modules_to_save, task_type, base_model_name_or_path and PEFT's bookkeeping fields ({})", key, file);
  if (const auto* v = field("peft_type"))
    check(v->is_string() && v->get<std::string>() == "LORA", "lora", "field 'peft_type' must be \"LORA\", got {} ({})",
          v->dump(), file);
  if (const auto* v = field("r")) {
    if (!v->is_number_integer() || v->get<std::int64_t>() <= 0) bad("r", "a positive integer");
    c.r = v->get<std::int64_t>();
  }
  if (const auto* v = field("lora_alpha")) {
    if (!v->is_number()) bad("lora_alpha", "a number");
    c.lora_alpha = v->get<float>();
  }
  if (const auto* v = field("lora_dropout")) {
    if (!v->is_number() || v->get<float>() < 0 || v->get<float>() >= 1) bad("lora_dropout", "a number in [0, 1)");
    c.lora_dropout = v->get<float>();
  }
  if (const auto* v = field("target_modules")) {
    if (v->is_string()) {
      const std::string s = v->get<std::string>();
      if (s == "all-linear") {
        c.all_linear = true;
      } else {
        c.target_regex = s;
      }
      c.target_modules.clear();
    } else if (v->is_array()) {
      c.target_modules.clear();
      for (const auto& name : *v) {
        if (!name.is_string()) bad("target_modules", "a list of module names, a regex, or \"all-linear\"");
        c.target_modules.push_back(name.get<std::string>());
      }
    } else {
      bad("target_modules", "a list of module names, a regex, or \"all-linear\"");
    }
  }
  if (const auto* v = field("layers_to_transform")) {
    if (v->is_number_integer()) {
      c.layers_to_transform = {v->get<std::int64_t>()};
    } else if (v->is_array()) {
      for (const auto& l : *v) {
        if (!l.is_number_integer()) bad("layers_to_transform", "a layer index or a list of them");
        c.layers_to_transform.push_back(l.get<std::int64_t>());
      }
    } else {
      bad("layers_to_transform", "a layer index or a list of them");
    }
  }
  if (const auto* v = field("rank_pattern")) {
    if (!v->is_object()) bad("rank_pattern", "an object of pattern -> rank");
    for (const auto& [k, r] : v->items()) {
      if (!r.is_number_integer() || r.get<std::int64_t>() <= 0) bad("rank_pattern", "an object of pattern -> rank");
      c.rank_pattern[k] = r.get<std::int64_t>();
    }
  }
  if (const auto* v = field("alpha_pattern")) {
    if (!v->is_object()) bad("alpha_pattern", "an object of pattern -> alpha");
    for (const auto& [k, a] : v->items()) {
      if (!a.is_number()) bad("alpha_pattern", "an object of pattern -> alpha");
      c.alpha_pattern[k] = a.get<float>();
    }
  }
  if (const auto* v = field("use_rslora")) {
    if (!v->is_boolean()) bad("use_rslora", "true or false");
    c.use_rslora = v->get<bool>();
  }
  if (const auto* v = field("init_lora_weights")) {
    if (v->is_boolean()) {
      c.init_lora_weights = v->get<bool>() ? "default" : "zeros";
    } else if (v->is_string()) {
      c.init_lora_weights = v->get<std::string>();
    } else {
      bad("init_lora_weights", "true, false or \"gaussian\"");
    }
  }
  if (const auto* v = field("bias")) {
    if (!v->is_string()) bad("bias", "\"none\", \"lora_only\" or \"all\"");
    c.bias = v->get<std::string>();
  }
  if (const auto* v = field("modules_to_save")) {
    if (!v->is_array()) bad("modules_to_save", "a list of module names");
    for (const auto& m : *v) {
      if (!m.is_string()) bad("modules_to_save", "a list of module names");
      c.modules_to_save.push_back(m.get<std::string>());
    }
  }
  if (const auto* v = field("task_type")) {
    if (!v->is_string()) bad("task_type", "a string");
    c.task_type = v->get<std::string>();
  }
  if (const auto* v = field("base_model_name_or_path")) {
    if (!v->is_string()) bad("base_model_name_or_path", "a string");
    c.base_model_name_or_path = v->get<std::string>();
  }
  for (const char* unsupported : {"use_dora", "fan_in_fan_out"})
    if (const auto* v = field(unsupported))
      check(v->is_boolean() && !v->get<bool>(), "lora", "field '{}' = {} is not supported; expected false ({})",
            unsupported, v->dump(), file);
  c.validate(file);
  return c;
}

nlohmann::ordered_json LoraConfig::to_json() const {
  nlohmann::ordered_json j;
  j["alpha_pattern"] = alpha_pattern;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model_name_or_path;
  j["bias"] = bias;
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  if (init_lora_weights == "default") {
    j["init_lora_weights"] = true;
  } else if (init_lora_weights == "zeros") {
    j["init_lora_weights"] = false;
  } else {
    j["init_lora_weights"] = init_lora_weights;
  }
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = layers_to_transform.empty() ? nlohmann::ordered_json(nullptr)
                                                         : nlohmann::ordered_json(layers_to_transform);
  j["lora_alpha"] = lora_alpha;
  j["lora_dropout"] = lora_dropout;
  j["modules_to_save"] = modules_to_save.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(modules_to_save);
  j["peft_type"] = "LORA";
  j["r"] = r;
  j["rank_pattern"] = rank_pattern;
  j["revision"] = nullptr;
  if (all_linear) {
    j["target_modules"] = "all-linear";
  } else if (!target_regex.empty()) {
    j["target_modules"] = target_regex;
  } else {
    j["target_modules"] = target_modules;
  }
  j["task_type"] = task_type;
  j["use_dora"] = false;
  j["use_rslora"] = use_rslora;
  return j;
}

void LoraConfig::validate(const std::string& source) const {
  constexpr std::string_view place = "lora";
  check(r > 0, place, "r must be positive, got {} ({})", r, source);
  check(lora_dropout >= 0 && lora_dropout < 1, place, "lora_dropout must be in [0, 1), got {} ({})", lora_dropout,
        source);
  check(bias == "none" || bias == "lora_only" || bias == "all", place,
        "bias must be none, lora_only or all, got '{}' ({})", bias, source);
  check(init_lora_weights == "default" || init_lora_weights == "gaussian" || init_lora_weights == "zeros", place,
        "init_lora_weights '{}' is not supported; expected true, false or gaussian ({})", init_lora_weights, source);
  check(all_linear || !target_regex.empty() || !target_modules.empty(), place, "target_modules is empty ({})", source);
  if (!target_regex.empty()) {
    try {
      std::regex compiled(target_regex);
    } catch (const std::regex_error& e) {
      fail(place, "target_modules regex '{}' is invalid: {} ({})", target_regex, e.what(), source);
    }
  }
}

bool LoraConfig::targets(const models::LinearModule& module) const {
  if (!layers_to_transform.empty() &&
      std::find(layers_to_transform.begin(), layers_to_transform.end(), module.layer) == layers_to_transform.end())
    return false;
  if (all_linear) return module.kind != "lm_head";
  if (!target_regex.empty()) return std::regex_match(module.path, std::regex(target_regex));
  for (const auto& name : target_modules)
    if (name_matches(module.path, name)) return true;
  return false;
}

std::int64_t LoraConfig::rank_for(const std::string& path) const {
  const auto* r_value = pattern_value(rank_pattern, path);
  return r_value ? *r_value : r;
}

float LoraConfig::alpha_for(const std::string& path) const {
  const auto* a = pattern_value(alpha_pattern, path);
  return a ? *a : lora_alpha;
}

float LoraConfig::scale_for(const std::string& path) const {
  const auto rank = static_cast<float>(rank_for(path));
  return alpha_for(path) / (use_rslora ? std::sqrt(rank) : rank);
}

}  // namespace loracpp::lora
