#pragma once
// "DIR[:SCALE]" arguments naming PEFT adapter folders to apply to a model.
#include <string>
#include <vector>

#include "models/llama.h"

namespace loracpp::cli {

// Loads each adapter (named adapter0, adapter1, ...) with its scale (default 1).
void load_adapter_args(models::LlamaModel& model, const std::vector<std::string>& args);

}  // namespace loracpp::cli
