// Host-only: dispatch for the rasteriser, which runs on float32 and float64 only.
#pragma once
#include "../common/dispatch.h"

namespace em {
namespace scan {

template <class F> void dispatch_real_types(int code, const char* where, F&& f) {
  switch (static_cast<DType>(code)) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default:
      throw std::invalid_argument(std::string(where) +
                                  ": values must be float32 or float64, got dtype code " +
                                  std::to_string(code));
  }
}

}  // namespace scan
}  // namespace em
