#pragma once
namespace loracpp {
// Threads used by BLAS and by our own kernels. Default: all cores.
void set_num_threads(int threads);
int num_threads();
}  // namespace loracpp
