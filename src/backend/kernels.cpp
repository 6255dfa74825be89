#include "backend/kernels.h"

#include "backend/cpu/cpu_kernels.h"
#include "core/error.h"
#if defined(LORACPP_WITH_CUDA)
#include "backend/cuda/cuda_backend.h"
#endif

namespace loracpp::backend {

namespace {
KernelTable make_cpu_table() {
  // Which library takes f32 products is read here, on the thread that first asks for a kernel and
  // before any runs, so that a bad LORACPP_F32_GEMM is refused there and never inside a kernel's
  // parallel region (where an error cannot leave the region).
  cpu::f32_products_through_onednn();
  KernelTable table;
#define LORACPP_KERNEL_FILL(name, ...) table.name = &cpu::name;
  LORACPP_KERNELS(LORACPP_KERNEL_FILL)
#undef LORACPP_KERNEL_FILL
  return table;
}

KernelTable make_cuda_table() {
  KernelTable table;  // without a CUDA backend in this build every slot stays empty
#if defined(LORACPP_WITH_CUDA)
  backend::cuda::fill_table(table);
#endif
  return table;
}

}  // namespace

const KernelTable& kernels(Device device) {
  static const KernelTable cpu_table = make_cpu_table();
  static const KernelTable cuda_table = make_cuda_table();
  return device == Device::cpu ? cpu_table : cuda_table;
}

void missing_kernel(std::string_view name, Device device) {
  fail(name, "has no {} implementation", device == Device::cuda ? "CUDA" : device_name(device));
}

GemmCounters& gemm_counters() {
  static GemmCounters counters;
  return counters;
}

}  // namespace loracpp::backend
