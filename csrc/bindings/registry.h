// Each family's binding file registers itself here, so adding a family never edits module.cpp.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace em {
namespace bindings {

namespace py = pybind11;
using Registrar = void (*)(py::module_& family);

struct Family {
  const char* name;
  Registrar define;
};

inline std::vector<Family>& families() {
  static std::vector<Family> all;
  return all;
}

struct Register {
  Register(const char* name, Registrar define) { families().push_back({name, define}); }
};

// Raw addresses cross the binding as integers (DESIGN rule 1: no libtorch).
template <class T> inline T* ptr(uintptr_t address) { return reinterpret_cast<T*>(address); }
inline cudaStream_t stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// Called by the *_cuda bindings in a build without CUDA.
[[noreturn]] inline void no_cuda(const char* fn) {
  throw std::runtime_error(std::string(fn) +
                           ": em_accel was built without CUDA; rebuild with EM_ACCEL_CUDA=ON");
}

}  // namespace bindings
}  // namespace em
