#pragma once
// The loracpp engine: tensors, ops with autograd, optimisers. The embeddable training API
// (models, adapters, trainer) builds on these.
#include "autograd/backward.h"
#include "backend/threads.h"
#include "core/random.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace loracpp {
inline constexpr const char* kVersion = "0.1.0";
}
