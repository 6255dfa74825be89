#pragma once
// Learning-rate schedules, with the conventions of HuggingFace's get_*_schedule_with_warmup:
// step counts optimiser steps from 0; during warm-up lr = base * step / warmup_steps.
#include <cstdint>
#include <string_view>

namespace loracpp::train {

enum class ScheduleKind { constant, cosine, linear };

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::constant;
  float base_lr = 1e-3f;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;  // needed by cosine and linear
  float min_lr_ratio = 0.0f;     // cosine and linear decay to base_lr * min_lr_ratio

  float lr_at(std::int64_t step) const;
};

ScheduleKind parse_schedule_kind(std::string_view name);  // "constant", "cosine", "linear"

}  // namespace loracpp::train
