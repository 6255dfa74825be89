// `lora merge`: a full model with adapters folded into its weights, checked against the unmerged one.
#include <fmt/core.h>

#include <cmath>

#include "cli/adapters_arg.h"
#include "cli/commands.h"
#include "lora/adapter.h"
#include "models/convert.h"
#include "models/registry.h"
#include "ops/tape.h"

namespace loracpp::cli {

void MergeCommand::add_to(CLI::App& parent) {
  app = parent.add_subcommand("merge", "Fold adapters into the base weights and write the model");
  app->add_option("--model,-m", model, "Base model")->required();
  app->add_option("--adapter,-a", adapters, "PEFT adapter folder, DIR[:SCALE]; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->required();
  app->add_option("--out,-o", out, "Output folder (hf) or file (gguf)")->required();
  app->add_option("--format", format, "hf or gguf (default: gguf for a .gguf input, hf otherwise)")
      ->check(CLI::IsMember({"hf", "gguf"}));
  app->add_option("--dtype", dtype,
                  "Weight dtype of the output (default: the base model's; q8_0, q4_0: GGUF's 8- and 4-bit blocks, gguf "
                  "only)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0"}));
  app->add_flag("--unsafe", unsafe, "Skip the check for non-finite merged weights");
}

int MergeCommand::run() {
  auto loaded = models::load_model(model);
  auto& m = *loaded.model;
  // A Q8_0 or Q4_0 GGUF base is merged widened: added into its blocks, each sum would round to the
  // blocks' steps. (--dtype q8_0 or q4_0 writes the merged weights' blocks.)
  m.widen_block_weights();
  load_adapter_args(m, adapters);
  // Logits before and after merging on a probe batch: the merge must not change the model.
  const std::int64_t probe_len = std::min<std::int64_t>(16, m.config().max_position_embeddings);
  std::vector<std::int64_t> ids;
  for (std::int64_t i = 0; i < probe_len; ++i) ids.push_back((i * 7919 + 1) % m.config().vocab_size);
  const Tensor probe = Tensor::from_ints(ids, {1, probe_len});
  std::vector<float> before;
  {
    autograd::NoGradGuard no_grad;
    before = m.forward(probe).to_floats();
  }
  for (const auto& name : lora::adapter_names(m)) lora::merge_adapter(m, name, !unsafe);
  double worst = 0, scale = 1e-30;
  {
    autograd::NoGradGuard no_grad;
    const auto after = m.forward(probe).to_floats();
    for (std::size_t i = 0; i < after.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(after[i] - before[i])));
      scale = std::max(scale, static_cast<double>(std::abs(before[i])));
    }
  }
  fmt::print(stderr, "merged {} adapter(s); probe logits differ by at most {:.3g} ({:.3g} relative)\n", adapters.size(),
             worst, worst / scale);
  const std::string out_format = !format.empty() ? format : loaded.format == "gguf" ? "gguf" : "hf";
  const DType out_dtype = dtype.empty() ? m.dtype() : parse_dtype(dtype);
  models::save_model(m, loaded.tokenizer.get(), out, out_format, out_dtype);
  fmt::print("{}\n", nlohmann::json{{"out", out}, {"format", out_format}, {"max_logit_difference", worst},
                                    {"relative_difference", worst / scale}}.dump());
  return 0;
}

}  // namespace loracpp::cli
