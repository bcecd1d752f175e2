// Host-only helpers shared by the launchers: dtype dispatch and argument checks.
#pragma once
#include <stdexcept>
#include <string>
#include "em_common.h"

namespace em {

// Calls f(T{}) with T the storage type named by code; throws on an unknown code.
template <class F> void dispatch_float_types(DType code, const char* where, F&& f) {
  switch (code) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    case DType::F16: f(f16{}); return;
    case DType::BF16: f(bf16{}); return;
  }
  throw std::invalid_argument(std::string(where) + ": unknown dtype code " +
                              std::to_string(static_cast<int>(code)));
}

// For kernels that need float32 range and precision: calls f(float{}) or f(double{}).
template <class F> void dispatch_real_types(int code, const char* where, F&& f) {
  switch (static_cast<DType>(code)) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: break;
  }
  throw std::invalid_argument(std::string(where) + ": dtype must be float32 or float64, got code " +
                              std::to_string(code));
}

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

}  // namespace em
