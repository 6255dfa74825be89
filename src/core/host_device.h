#pragma once
// Marks small functions that both the CPU backend and CUDA kernels call (nvcc sees them as
// __host__ __device__; other compilers see plain inline functions).
#if defined(__CUDACC__)
#define LORACPP_HOST_DEVICE __host__ __device__
#else
#define LORACPP_HOST_DEVICE
#endif
