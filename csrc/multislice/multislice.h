// Multislice per-element math, shared by the CPU and CUDA launchers (EM_HD).
//
// Conventions (docs/multislice.md): arrays are [.., nx, ny] with x the first axis; sample i sits
// at x = i*dx; spatial frequencies are numpy.fft.fftfreq(n, dx) in cycles/Å (no 2π); forward FFT
// unnormalised. The transmission is exp(+i sigma V) and the Fresnel propagator over dz is
// exp(-i pi lambda dz k^2) exp(-2 pi i dz (kx tan(tx) + ky tan(ty))) times the 2/3 antialias
// aperture (Kirkland, Advanced Computing in EM, 2nd ed., ch. 6; abTEM 1.0.11 conventions).
#pragma once
#include <cmath>
#include <cstdint>

#include "../common/em_common.h"

namespace em {
namespace multislice {

constexpr double kPi = 3.14159265358979323846;

// Interleaved complex number (the layout of torch.complex64/complex128 storage).
template <class T> struct cplx { T re, im; };

template <class T> EM_HD cplx<T> cmul(cplx<T> a, cplx<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}

// Signed integer frequency index of DFT bin i of n (numpy.fft.fftfreq times n).
EM_HD int64_t freq_index(int64_t i, int64_t n) { return i < (n + 1) / 2 ? i : i - n; }

// exp(i*phase) in the storage precision.
EM_HD cplx<float> cis(float phase) { return {cosf(phase), sinf(phase)}; }
EM_HD cplx<double> cis(double phase) { return {cos(phase), sin(phase)}; }

// exp(-2 pi i f u) for integer frequency f and fractional coordinate u = x / L: the product is
// reduced mod 1 in double first, so the phase stays accurate for large f.
EM_HD cplx<double> structure_phase(int64_t f, double u) {
  double t = double(f) * u;
  t -= floor(t);
  return cis(-2.0 * kPi * t);
}

// 1-D part of the Fresnel propagator phase [rad] at frequency k [1/Å]:
// -pi lambda dz k^2 - 2 pi dz k tan(theta). The 2-D phase is the sum of the x and y parts.
EM_HD double fresnel_phase_1d(double k, double wavelength, double dz, double tan_theta) {
  return -kPi * wavelength * dz * k * k - 2.0 * kPi * dz * k * tan_theta;
}

// Radial antialias aperture at |k|^2 [1/Å^2]: 1 below kc - w, raised-cosine taper to 0 at kc,
// 0 above (cutoff kc = 2/3 of the coarser Nyquist frequency by default). kc <= 0: no aperture.
EM_HD double antialias(double k2, double kc, double w) {
  if (kc <= 0.0) return 1.0;
  if (k2 > kc * kc) return 0.0;
  const double k = sqrt(k2);
  if (k <= kc - w) return 1.0;
  return 0.5 * (1.0 + cos(kPi * (k - kc + w) / w));
}

// exp(i sigma v) for the projected potential v [V·Å] and interaction parameter sigma [rad/(V·Å)].
// abTEM-compatible bilinear deposit of one atom at (x, y) [Å] on an nx x ny periodic grid of
// spacing dx, dy [Å]: the four grid offsets (ix * ny + iy) and their weights.
struct DepositCorners {
  int64_t index[4];
  float weight[4];
};
EM_HD DepositCorners deposit_corners(double x, double y, float dx, float dy, int64_t nx, int64_t ny) {
  const float px = float(x) / dx, py = float(y) / dy;
  const float fx0 = floorf(px), fy0 = floorf(py);
  const float fx = px - fx0, fy = py - fy0;
  int64_t ix = int64_t(fx0) % nx, iy = int64_t(fy0) % ny;
  if (ix < 0) ix += nx;
  if (iy < 0) iy += ny;
  const int64_t ix1 = (ix + 1) % nx, iy1 = (iy + 1) % ny;
  return {{ix * ny + iy, ix1 * ny + iy, ix * ny + iy1, ix1 * ny + iy1},
          {(1.f - fx) * (1.f - fy), fx * (1.f - fy), (1.f - fx) * fy, fx * fy}};
}

template <class T> EM_HD cplx<T> transmission(T v, T sigma) { return cis(T(sigma * v)); }

}  // namespace multislice
}  // namespace em
