// CUDA-only helpers for the launchers in csrc/<family>/cuda.cu.
#pragma once
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>

namespace em {

// Raises RuntimeError (through pybind11) naming the kernel when a launch failed.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(kernel) + ": " + cudaGetErrorString(err));
}

inline int64_t blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 32) {
  const int64_t b = (n + threads - 1) / threads;
  return b < 1 ? 1 : (b > cap ? cap : b);
}

}  // namespace em
