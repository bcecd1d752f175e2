// The em_accel._native module: build facts plus one submodule per kernel family.
#include <algorithm>
#include <string>

#include "../common/em_common.h"
#include "registry.h"

#if EM_ACCEL_WITH_CUDA
#include <cuda_runtime.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using em::bindings::families;

PYBIND11_MODULE(_native, m) {
  m.doc() = "em-accel native kernels (C++ and CUDA); called through em_accel.ops";
  m.def("has_cuda", [] { return bool(EM_ACCEL_WITH_CUDA); },
        "True when the CUDA kernels were compiled into this build.");
  m.def("cuda_archs", [] { return std::string(EM_ACCEL_CUDA_ARCHS); },
        "CMake CUDA architectures this build targets ('' without CUDA).");
  m.def("cuda_device_count", [] {
#if EM_ACCEL_WITH_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
#else
    return 0;
#endif
  }, "Number of CUDA devices the runtime sees (0 without a driver or GPU).");
  m.def("openmp", [] {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  m.def("max_threads", [] {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  py::enum_<em::DType>(m, "DType")
      .value("F32", em::DType::F32).value("F64", em::DType::F64)
      .value("F16", em::DType::F16).value("BF16", em::DType::BF16);
  auto& all = families();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return std::string(a.name) < std::string(b.name);
  });
  for (const auto& f : all) {
    py::module_ sub = m.def_submodule(f.name);
    f.define(sub);
  }
}
