#include "cli/adapters_arg.h"

#include <filesystem>

#include "lora/adapter.h"

namespace loracpp::cli {

void load_adapter_args(models::LlamaModel& model, const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string dir = args[i];
    float scale = 1.0f;
    const auto colon = dir.rfind(':');
    if (colon != std::string::npos && !std::filesystem::exists(dir)) {
      const std::string number = dir.substr(colon + 1);
      try {
        std::size_t used = 0;
        scale = std::stof(number, &used);
        check(used == number.size(), "adapter", "");
      } catch (const std::exception&) {
        fail("adapter", "'{}' is not DIR[:SCALE]: '{}' is not a number", args[i], number);
      }
      dir = dir.substr(0, colon);
    }
    lora::load_peft_adapter(model, fmt::format("adapter{}", i), dir, scale);
  }
}

}  // namespace loracpp::cli
