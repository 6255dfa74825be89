#pragma once
// The CUDA backend as the rest of the engine sees it: plain C++, no CUDA types, so only the .cu
// files behind it need nvcc. Built when CMake finds nvcc (LORACPP_WITH_CUDA); every function
// throws a clear error when no device is usable.
#include <cstddef>
#include <cstdint>

#include "backend/kernels.h"

namespace loracpp::backend::cuda {

// Whether a CUDA device is present and usable (false, never a throw, on a machine without one).
bool available();
// A human-readable reason when !available() (for skipped tests and errors).
const char* unavailable_reason();

// Device memory through a caching allocator: freed blocks are kept by size and reused, so a
// training step does not call cudaMalloc after the first.
void* allocate(std::size_t bytes);
void release(void* pointer, std::size_t bytes);
void fill_zero(void* pointer, std::size_t bytes);
// The most device memory held by live allocations (cached free blocks not counted) since the start
// or the last reset: what PyTorch reports as max_memory_allocated.
std::size_t peak_bytes();
void reset_peak_bytes();
void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes);
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes);
void copy_on_device(void* device_dst, const void* device_src, std::size_t bytes);  // in stream order
void synchronize();

// The kernels this backend has; the slots it leaves null raise "<kernel> has no CUDA
// implementation".
void fill_table(KernelTable& table);

// Whether the fused attention kernels take this shape: they multiply on tensor cores in bf16 (the
// bf16 path's attention_products) with head sizes 32 and 64; ops compose other attention from
// cuBLAS products and the softmax kernels.
bool attention_fits(std::int64_t head_dim, std::int64_t v_dim, bool bf16_products);

}  // namespace loracpp::backend::cuda
