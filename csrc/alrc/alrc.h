// ALRC per-element math, shared by cpu.cpp and cuda.cu (thesis ch. 3; arXiv:1906.09060).
// Derivation and the definitions of the variants: docs/derivations/alrc.md.
#pragma once
#include <type_traits>

#include "../common/em_common.h"

namespace em {
namespace alrc {

// Mirrored by em_accel/ops/alrc.py::ErrorKind.
enum class ErrorKind : int { Squared = 0, Absolute = 1, Quartic = 2 };

// Error kinds are template parameters so the inner loops compile without a branch and vectorise.
template <ErrorKind K, class A> EM_HD A error_value(A d) {
  if constexpr (K == ErrorKind::Absolute) return d < A(0) ? -d : d;
  else if constexpr (K == ErrorKind::Quartic) { const A d2 = d * d; return d2 * d2; }
  else return d * d;
}

// d(error)/d(prediction) at d = prediction - target; |d| has subgradient 0 at 0, as torch's abs.
template <ErrorKind K, class A> EM_HD A error_grad(A d) {
  if constexpr (K == ErrorKind::Absolute) return d > A(0) ? A(1) : (d < A(0) ? A(-1) : A(0));
  else if constexpr (K == ErrorKind::Quartic) return A(4) * d * d * d;
  else return A(2) * d;
}

// Host-side: calls f(std::integral_constant<ErrorKind, K>{}) for the runtime kind.
template <class F> void dispatch_kind(int kind, F&& f) {
  switch (static_cast<ErrorKind>(kind)) {
    case ErrorKind::Absolute: f(std::integral_constant<ErrorKind, ErrorKind::Absolute>{}); return;
    case ErrorKind::Quartic: f(std::integral_constant<ErrorKind, ErrorKind::Quartic>{}); return;
    default: f(std::integral_constant<ErrorKind, ErrorKind::Squared>{}); return;
  }
}

// Clip thresholds mu1 + n_up*sigma and mu1 - n_down*sigma, sigma = sqrt(max(mu2 - mu1^2, 0) + 1e-8).
// n_down = +inf disables the lower side (its threshold is -inf).
EM_HD void thresholds(double mu1, double mu2, double n_up, double n_down, double* up, double* down) {
  double var = mu2 - mu1 * mu1;
  if (var < 0.0) var = 0.0;  // rounding can leave mu2 a hair below mu1^2
  const double sigma = sqrt(var + 1e-8);
  *up = mu1 + n_up * sigma;
  *down = (n_down == INFINITY) ? -INFINITY : mu1 - n_down * sigma;
}

// The clipped loss (value) and the factor its gradient is scaled by. Non-finite losses
// pass through with scale 1; callers leave them out of the moment update.
EM_HD double clip(double loss, double up, double down, double* scale) {
  if (!is_finite(loss)) { *scale = 1.0; return loss; }
  if (loss > up) { *scale = up / loss; return up; }
  if (loss < down && loss > 0.0) { *scale = down / loss; return down; }
  *scale = 1.0;
  return loss;
}

// Exponential moving average step of a moment from the batch mean of clipped losses.
EM_HD float ema(float mu, double decay, double batch_mean, int64_t count) {
  if (count == 0) return mu;  // every loss non-finite: keep the old moment
  return float(decay * double(mu) + (1.0 - decay) * batch_mean);
}

}  // namespace alrc
}  // namespace em
