#include "backend/kernels.h"

#include "backend/cpu/cpu_kernels.h"
#include "core/error.h"

namespace loracpp::backend {

namespace {
KernelTable make_cpu_table() {
  KernelTable table;
#define LORACPP_KERNEL_FILL(name, ...) table.name = &cpu::name;
  LORACPP_KERNELS(LORACPP_KERNEL_FILL)
#undef LORACPP_KERNEL_FILL
  return table;
}
}  // namespace

const KernelTable& kernels(Device device) {
  static const KernelTable cpu_table = make_cpu_table();
  static const KernelTable empty_table;  // no CUDA backend in this build
  return device == Device::cpu ? cpu_table : empty_table;
}

void missing_kernel(std::string_view name, Device device) {
  fail(name, "has no {} implementation", device == Device::cuda ? "CUDA" : device_name(device));
}

GemmCounters& gemm_counters() {
  static GemmCounters counters;
  return counters;
}

}  // namespace loracpp::backend
