#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace loracpp::train {

float LrSchedule::lr_at(std::int64_t step) const {
  check(step >= 0, "schedule", "step must be >= 0, got {}", step);
  if (step < warmup_steps)
    return base_lr * static_cast<float>(static_cast<double>(step) / static_cast<double>(warmup_steps));
  if (kind == ScheduleKind::constant) return base_lr;
  check(total_steps > 0, "schedule", "a {} schedule needs total_steps > 0",
        kind == ScheduleKind::cosine ? "cosine" : "linear");
  const double span = static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  const double factor = kind == ScheduleKind::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress))
                                                     : 1.0 - progress;
  return base_lr * static_cast<float>(min_lr_ratio + (1.0 - min_lr_ratio) * std::max(0.0, factor));
}

ScheduleKind parse_schedule_kind(std::string_view name) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "linear") return ScheduleKind::linear;
  fail("schedule", "unknown schedule '{}'; expected one of constant, cosine, linear", name);
}

}  // namespace loracpp::train
