// Device, stream, cuBLAS handle and the caching allocator of the CUDA backend.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.cuh"
#include "core/error.h"

namespace loracpp::backend::cuda {

namespace {

struct Runtime {
  bool ok = false;
  std::string reason;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::mutex mutex;
  std::multimap<std::size_t, void*> free_blocks;  // size -> blocks ready for reuse
  std::size_t in_use = 0, peak = 0;                // bytes handed out and not yet released

  Runtime() {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0) {
      reason = status != cudaSuccess ? std::string("no usable CUDA device: ") + cudaGetErrorString(status)
                                     : "no CUDA device on this machine";
      return;
    }
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(blas, stream) != CUBLAS_STATUS_SUCCESS) {
      reason = "CUDA device present but the stream or cuBLAS could not start";
      return;
    }
    ok = true;
  }
};

Runtime& runtime() {
  static Runtime instance;
  return instance;
}

Runtime& require() {
  Runtime& r = runtime();
  if (!r.ok) throw Error("[cuda] " + r.reason);
  return r;
}

// Sizes round up to 512 bytes, and to 2 MB steps past 1 MB, so blocks are reused across steps.
std::size_t rounded(std::size_t bytes) {
  const std::size_t step = bytes > (1u << 20) ? (2u << 20) : 512;
  return (bytes + step - 1) / step * step;
}

}  // namespace

cudaStream_t stream() { return require().stream; }
cublasHandle_t blas() { return require().blas; }

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error(std::string("[cuda] ") + what + ": " + cudaGetErrorString(status));
}

void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

bool available() { return runtime().ok; }
const char* unavailable_reason() { return runtime().ok ? "" : runtime().reason.c_str(); }

void* allocate(std::size_t bytes) {
  Runtime& r = require();
  const std::size_t size = rounded(std::max<std::size_t>(bytes, 1));
  {
    std::lock_guard lock(r.mutex);
    const auto it = r.free_blocks.find(size);
    if (it != r.free_blocks.end()) {
      void* p = it->second;
      r.free_blocks.erase(it);
      r.in_use += size;
      r.peak = std::max(r.peak, r.in_use);
      return p;
    }
  }
  void* p = nullptr;
  if (cudaMalloc(&p, size) != cudaSuccess) {
    // Out of memory: give the cached blocks back and try once more.
    std::lock_guard lock(r.mutex);
    check_cuda(cudaStreamSynchronize(r.stream), "synchronising before freeing the cache");
    for (auto& [s, block] : r.free_blocks) cudaFree(block);
    r.free_blocks.clear();
    check_cuda(cudaMalloc(&p, size), "cudaMalloc");
  }
  std::lock_guard lock(r.mutex);
  r.in_use += size;
  r.peak = std::max(r.peak, r.in_use);
  return p;
}

std::size_t peak_bytes() {
  Runtime& r = runtime();
  std::lock_guard lock(r.mutex);
  return r.peak;
}

void reset_peak_bytes() {
  Runtime& r = runtime();
  std::lock_guard lock(r.mutex);
  r.peak = r.in_use;
}

void release(void* pointer, std::size_t bytes) {
  if (!pointer) return;
  Runtime& r = runtime();
  std::lock_guard lock(r.mutex);
  const std::size_t size = rounded(std::max<std::size_t>(bytes, 1));
  r.free_blocks.emplace(size, pointer);  // reused in stream order
  r.in_use -= size;
}

void fill_zero(void* pointer, std::size_t bytes) {
  check_cuda(cudaMemsetAsync(pointer, 0, bytes, stream()), "cudaMemsetAsync");
}

void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes) {
  check_cuda(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream()), "copy to device");
  check_cuda(cudaStreamSynchronize(stream()), "copy to device");
}

void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes) {
  check_cuda(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream()), "copy to host");
  check_cuda(cudaStreamSynchronize(stream()), "copy to host");
}

void copy_on_device(void* device_dst, const void* device_src, std::size_t bytes) {
  check_cuda(cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice, stream()), "copy on device");
}

void synchronize() { check_cuda(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }

}  // namespace loracpp::backend::cuda
