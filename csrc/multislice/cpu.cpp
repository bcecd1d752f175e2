// Multislice CPU launchers: OpenMP loops over the math in multislice.h.
#include <cmath>
#include <vector>

#include "../common/dispatch.h"
#include "launch.h"
#include "multislice.h"

namespace em {
namespace multislice {
namespace {

constexpr int64_t kParallelWork = 1 << 18;  // elements below which loops stay on one thread

// r += sum_a c_a * e_a over a row of m complex values, for na = 1..4 atoms at once (split
// re/im layout). Compiled for AVX-512, AVX2 and baseline x86-64; the loader picks one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EM_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EM_MULTIVERSION
#endif

template <class T>
inline void row_axpy(int na, int64_t m, const T* cr, const T* ci, const T* const* er,
                     const T* const* ei, T* __restrict__ rr, T* __restrict__ ri) {
  if (na == 4) {
    const T* __restrict__ e0r = er[0]; const T* __restrict__ e0i = ei[0];
    const T* __restrict__ e1r = er[1]; const T* __restrict__ e1i = ei[1];
    const T* __restrict__ e2r = er[2]; const T* __restrict__ e2i = ei[2];
    const T* __restrict__ e3r = er[3]; const T* __restrict__ e3i = ei[3];
    for (int64_t i = 0; i < m; ++i) {
      rr[i] += cr[0] * e0r[i] - ci[0] * e0i[i] + cr[1] * e1r[i] - ci[1] * e1i[i] +
               cr[2] * e2r[i] - ci[2] * e2i[i] + cr[3] * e3r[i] - ci[3] * e3i[i];
      ri[i] += cr[0] * e0i[i] + ci[0] * e0r[i] + cr[1] * e1i[i] + ci[1] * e1r[i] +
               cr[2] * e2i[i] + ci[2] * e2r[i] + cr[3] * e3i[i] + ci[3] * e3r[i];
    }
    return;
  }
  for (int a = 0; a < na; ++a) {
    const T* __restrict__ xr = er[a];
    const T* __restrict__ xi = ei[a];
    const T c0 = cr[a], c1 = ci[a];
    for (int64_t i = 0; i < m; ++i) {
      rr[i] += c0 * xr[i] - c1 * xi[i];
      ri[i] += c0 * xi[i] + c1 * xr[i];
    }
  }
}

EM_MULTIVERSION void row_axpy_f(int na, int64_t m, const float* cr, const float* ci,
                                const float* const* er, const float* const* ei, float* rr,
                                float* ri) {
  row_axpy<float>(na, m, cr, ci, er, ei, rr, ri);
}
EM_MULTIVERSION void row_axpy_d(int na, int64_t m, const double* cr, const double* ci,
                                const double* const* er, const double* const* ei, double* rr,
                                double* ri) {
  row_axpy<double>(na, m, cr, ci, er, ei, rr, ri);
}
inline void row_axpy_any(int na, int64_t m, const float* cr, const float* ci, const float* const* er,
                         const float* const* ei, float* rr, float* ri) {
  row_axpy_f(na, m, cr, ci, er, ei, rr, ri);
}
inline void row_axpy_any(int na, int64_t m, const double* cr, const double* ci,
                         const double* const* er, const double* const* ei, double* rr, double* ri) {
  row_axpy_d(na, m, cr, ci, er, ei, rr, ri);
}

// exp(-2 pi i f u) for f = 0 .. count-1 by complex recurrence in double, re-anchored with a
// direct structure_phase every 64 steps (error ~1e-14).
inline void phase_run(double u, int64_t count, cplx<double>* out) {
  cplx<double> step = structure_phase(1, u), e{1.0, 0.0};
  for (int64_t f = 0; f < count; ++f) {
    if ((f & 63) == 0) e = structure_phase(f, u);
    out[f] = e;
    e = cmul(e, step);
  }
}

// One item: per row ix, sum exp(-2 pi i kx x_j) * exp(-2 pi i ky y_j) over each species run of
// atoms (separable phases, tables built once per item), then weight by that species' form factor.
template <class T>
void structure_factor_item(const PotentialParams& p, const double* pos, const int32_t* species,
                           int64_t a0, int64_t a1, const T* ff, cplx<T>* out) {
  const int64_t nx = p.nx, nyh = p.ny / 2 + 1, n = a1 - a0;
  const int64_t plane = nx * nyh;
  if (n == 0) {
    for (int64_t i = 0; i < plane; ++i) out[i] = {T(0), T(0)};
    return;
  }
  // ey tables in split (re, im) layout so the row loop vectorises; ex tables complex.
  std::vector<T> ey_re(n * nyh), ey_im(n * nyh);
  std::vector<cplx<T>> ex(n * nx);
  const bool big = n * plane > kParallelWork;  // small items: no thread start-up on busy CPUs
#pragma omp parallel if (big)
  {
    std::vector<cplx<double>> tmp(nx > nyh ? nx : nyh);
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      const double ux = pos[2 * (a0 + j)] / p.lx, uy = pos[2 * (a0 + j) + 1] / p.ly;
      phase_run(uy, nyh, tmp.data());
      for (int64_t iy = 0; iy < nyh; ++iy) {
        ey_re[j * nyh + iy] = T(tmp[iy].re);
        ey_im[j * nyh + iy] = T(tmp[iy].im);
      }
      const int64_t npos = (nx + 1) / 2;  // f = 0 .. npos-1; negative f = ix - nx
      phase_run(ux, nx - npos + 1 > npos ? nx - npos + 1 : npos, tmp.data());
      for (int64_t ix = 0; ix < nx; ++ix) {
        const int64_t f = freq_index(ix, nx);
        const cplx<double> e = f >= 0 ? tmp[f] : cplx<double>{tmp[-f].re, -tmp[-f].im};
        ex[j * nx + ix] = {T(e.re), T(e.im)};
      }
    }
  }
#pragma omp parallel if (big)
  {
    std::vector<T> r_re(nyh), r_im(nyh);
#pragma omp for schedule(static)
    for (int64_t ix = 0; ix < nx; ++ix) {
      cplx<T>* row = out + ix * nyh;
      for (int64_t iy = 0; iy < nyh; ++iy) row[iy] = {T(0), T(0)};
      int64_t j = 0;
      while (j < n) {
        const int32_t s = species[a0 + j];
        for (int64_t iy = 0; iy < nyh; ++iy) { r_re[iy] = T(0); r_im[iy] = T(0); }
        while (j < n && species[a0 + j] == s) {
          T cr[4], ci[4];
          const T* er[4];
          const T* ei[4];
          int na = 0;
          for (; na < 4 && j < n && species[a0 + j] == s; ++na, ++j) {
            cr[na] = ex[j * nx + ix].re;
            ci[na] = ex[j * nx + ix].im;
            er[na] = &ey_re[j * nyh];
            ei[na] = &ey_im[j * nyh];
          }
          row_axpy_any(na, nyh, cr, ci, er, ei, r_re.data(), r_im.data());
        }
        const T* f = ff + s * plane + ix * nyh;
        for (int64_t iy = 0; iy < nyh; ++iy) {
          row[iy].re += f[iy] * r_re[iy];
          row[iy].im += f[iy] * r_im[iy];
        }
      }
    }
  }
}

// exp(i x) in float for |x| < ~1e5, branch-free so loops over it vectorise: Cody-Waite
// reduction by pi/2 and the minimax polynomials of Cephes' sinf/cosf (|error| <= 2e-7 for the
// phases multislice produces). The CPU transmission kernels use it for float32 data; float64
// and the CUDA kernels use the math library through transmission() in multislice.h.
inline cplx<float> cis_fast(float x) {
  const float q = rintf(x * 0.63661977236758134f);
  const int qi = int(q);
  float r = x - q * 1.5703125f;
  r = r - q * 4.837512969970703125e-4f;
  r = r - q * 7.54978995489188216e-8f;
  const float r2 = r * r;
  const float sp = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
  const float cp = 1.0f - 0.5f * r2 +
                   r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f + r2 * 2.443315711809948e-5f));
  const bool swap = qi & 1;
  float sn = swap ? cp : sp, cs = swap ? sp : cp;
  sn = (qi & 2) ? -sn : sn;
  cs = ((qi + 1) & 2) ? -cs : cs;
  return {cs, sn};
}

EM_MULTIVERSION void transmit_block_f(int64_t n, float sigma, const float* __restrict__ v,
                                      float* __restrict__ w, int write_only) {
  for (int64_t i = 0; i < n; ++i) {
    const cplx<float> t = cis_fast(sigma * v[i]);
    if (write_only) {
      w[2 * i] = t.re;
      w[2 * i + 1] = t.im;
    } else {
      const float a = w[2 * i], c = w[2 * i + 1];
      w[2 * i] = a * t.re - c * t.im;
      w[2 * i + 1] = a * t.im + c * t.re;
    }
  }
}

// w[b] (*)= exp(i sigma v[b]) for b < batch, v[b] = v + b * v_stride; blocks of 8192 values.
void transmit_rows_f(int64_t batch, int64_t pixels, int64_t v_stride, float sigma, const float* v,
                     cplx<float>* w, int write_only) {
  constexpr int64_t kBlock = 8192;
  const int64_t blocks = (pixels + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (batch * pixels > kParallelWork)
  for (int64_t t = 0; t < batch * blocks; ++t) {
    const int64_t b = t / blocks, i0 = (t % blocks) * kBlock;
    const int64_t n = pixels - i0 < kBlock ? pixels - i0 : kBlock;
    transmit_block_f(n, sigma, v + b * v_stride + i0, reinterpret_cast<float*>(w + b * pixels + i0),
                     write_only);
  }
}

template <class T>
void deposit_item(const PotentialParams& p, const double* pos, const int32_t* species, int64_t a0,
                  int64_t a1, T* out) {
  const int64_t nx = p.nx, ny = p.ny;
  const float dx = float(p.lx / double(nx)), dy = float(p.ly / double(ny));
  for (int64_t j = a0; j < a1; ++j) {
    const DepositCorners c = deposit_corners(pos[2 * j], pos[2 * j + 1], dx, dy, nx, ny);
    T* plane = out + int64_t(species[j]) * nx * ny;
    for (int k = 0; k < 4; ++k) plane[c.index[k]] += T(c.weight[k]);
  }
}

}  // namespace

void structure_factor_cpu(const PotentialParams& p, const double* positions, const int32_t* species,
                          const int64_t* offsets, const void* ff, void* out) {
  if (p.items == 0 || p.nx == 0 || p.ny == 0) return;
  dispatch_real_types(p.dtype, "multislice.structure_factor_cpu", [&](auto tag) {
    using T = decltype(tag);
    const int64_t plane = p.nx * (p.ny / 2 + 1);
    for (int64_t m = 0; m < p.items; ++m)
      structure_factor_item<T>(p, positions, species, offsets[m], offsets[m + 1],
                               static_cast<const T*>(ff), static_cast<cplx<T>*>(out) + m * plane);
  });
}

void deposit_cpu(const PotentialParams& p, const double* positions, const int32_t* species,
                 const int64_t* offsets, void* out) {
  if (p.items == 0 || p.nx == 0 || p.ny == 0) return;
  dispatch_real_types(p.dtype, "multislice.deposit_cpu", [&](auto tag) {
    using T = decltype(tag);
    const int64_t block = p.species * p.nx * p.ny;
#pragma omp parallel for schedule(dynamic) if (int64_t(offsets[p.items]) > 4096)
    for (int64_t m = 0; m < p.items; ++m)
      deposit_item<T>(p, positions, species, offsets[m], offsets[m + 1],
                      static_cast<T*>(out) + m * block);
  });
}

void transmit_cpu(const TransmitParams& p, const void* potential, void* wave) {
  if (p.batch == 0 || p.pixels == 0) return;
  if (p.dtype == int(DType::F32)) {
    transmit_rows_f(p.batch, p.pixels, p.v_stride, float(p.sigma), static_cast<const float*>(potential),
                    static_cast<cplx<float>*>(wave), 0);
    return;
  }
  dispatch_real_types(p.dtype, "multislice.transmit_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* v = static_cast<const T*>(potential);
    cplx<T>* w = static_cast<cplx<T>*>(wave);
    const T sigma = T(p.sigma);
#pragma omp parallel for schedule(static) if (p.batch * p.pixels > kParallelWork)
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t i = 0; i < p.pixels; ++i)
        w[b * p.pixels + i] = cmul(w[b * p.pixels + i], transmission(v[b * p.v_stride + i], sigma));
  });
}

void transmission_cpu(const TransmitParams& p, const void* potential, void* out) {
  if (p.batch == 0 || p.pixels == 0) return;
  if (p.dtype == int(DType::F32)) {  // one item of batch * pixels values, written
    transmit_rows_f(1, p.batch * p.pixels, 0, float(p.sigma), static_cast<const float*>(potential),
                    static_cast<cplx<float>*>(out), 1);
    return;
  }
  dispatch_real_types(p.dtype, "multislice.transmission_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* v = static_cast<const T*>(potential);
    cplx<T>* t = static_cast<cplx<T>*>(out);
    const T sigma = T(p.sigma);
    const int64_t total = p.batch * p.pixels;
#pragma omp parallel for schedule(static) if (total > kParallelWork)
    for (int64_t i = 0; i < total; ++i) t[i] = transmission(v[i], sigma);
  });
}

namespace {

// Largest |f| (integer frequency) with (f * step)^2 <= limit2, or -1 if none.
int64_t max_index_within(double limit2, double step, int64_t n) {
  if (!(limit2 >= 0.0)) return -1;  // negative or NaN: no column
  const double q = std::sqrt(limit2) / step;
  // Clearly beyond the grid's last frequency (or inf/NaN): every column, as the search below
  // would find. Converting a q past 2^63 to int64 was undefined and, as INT64_MIN, made that
  // search count for ever (ms_propagate with dy or kc = 1e300).
  if (!(q < double(n / 2) + 2.0)) return n / 2;
  int64_t m = int64_t(std::floor(q));
  while (m > 0 && double(m) * step * double(m) * step > limit2) --m;
  while ((m + 1) <= n / 2 && double(m + 1) * step * double(m + 1) * step <= limit2) ++m;
  return m > n / 2 ? n / 2 : m;
}

// Calls f(iy) for every column whose integer frequency satisfies lo < |freq_index(iy)| <= hi.
template <class T, class F>
void for_band(int64_t ny, int64_t lo, int64_t hi, F&& f) {
  const int64_t half = (ny + 1) / 2;  // columns [0, half) hold f = iy >= 0
  const int64_t p0 = lo + 1 > 0 ? lo + 1 : 0, p1 = hi < half - 1 ? hi : half - 1;
  for (int64_t iy = p0; iy <= p1; ++iy) f(iy);
  // columns [half, ny) hold f = iy - ny, |f| = ny - iy: lo < ny - iy <= hi
  const int64_t n0 = ny - hi > half ? ny - hi : half, n1 = ny - lo < ny ? ny - lo : ny;
  for (int64_t iy = n0; iy < n1; ++iy) f(iy);
}

}  // namespace

void propagate_cpu(const PropagateParams& p, const double* tilt, void* spectrum) {
  if (p.batch == 0 || p.nx == 0 || p.ny == 0) return;
  dispatch_real_types(p.dtype, "multislice.propagate_cpu", [&](auto tag) {
    using T = decltype(tag);
    cplx<T>* w = static_cast<cplx<T>*>(spectrum);
    const int64_t nx = p.nx, ny = p.ny;
    const double fx = 1.0 / (double(nx) * p.dx), fy = 1.0 / (double(ny) * p.dy);
    const int64_t tilts = p.tilt_stride ? p.batch : 1;
    bool phase_free = p.dz == 0.0;  // dz = 0: the band limit alone (a real mask)
    // Separable phase tables per distinct tilt: exp(i phase_x(kx)), exp(i phase_y(ky)).
    std::vector<cplx<T>> px(tilts * nx), py(tilts * ny);
    for (int64_t t = 0; t < tilts; ++t) {
      for (int64_t ix = 0; ix < nx; ++ix) {
        const cplx<double> e = cis(fresnel_phase_1d(double(freq_index(ix, nx)) * fx, p.wavelength,
                                                    p.dz, tilt[2 * t]));
        px[t * nx + ix] = {T(p.scale * e.re), T(p.scale * e.im)};  // the scale rides on x
      }
      for (int64_t iy = 0; iy < ny; ++iy) {
        const cplx<double> e = cis(fresnel_phase_1d(double(freq_index(iy, ny)) * fy, p.wavelength,
                                                    p.dz, tilt[2 * t + 1]));
        py[t * ny + iy] = {T(e.re), T(e.im)};
      }
    }
    const T s = T(p.scale);
    const bool aperture = p.kc > 0;
    const double inner2 = aperture ? (p.kc - p.taper) * (p.kc - p.taper) : INFINITY;
    const double outer2 = aperture ? p.kc * p.kc : INFINITY;
#pragma omp parallel for collapse(2) schedule(static) if (p.batch * nx * ny > kParallelWork)
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t ix = 0; ix < nx; ++ix) {
        const int64_t t = p.tilt_stride ? b : 0;
        const cplx<T> cx = px[t * nx + ix];
        const cplx<T>* __restrict__ cy = &py[t * ny];
        cplx<T>* __restrict__ row = w + (b * nx + ix) * ny;
        const double kx = double(freq_index(ix, nx)) * fx, kx2 = kx * kx;
        // Column bands: |f| <= m_in flat aperture, m_in < |f| <= m_out taper, beyond: zero.
        const int64_t m_in = aperture ? max_index_within(inner2 - kx2, fy, ny) : ny / 2;
        const int64_t m_out = aperture ? max_index_within(outer2 - kx2, fy, ny) : ny / 2;
        auto flat = [&](int64_t iy) {
          const cplx<T> f = cmul(cx, cy[iy]);
          row[iy] = cmul(row[iy], f);
        };
        auto scaled = [&](int64_t iy) { row[iy] = {s * row[iy].re, s * row[iy].im}; };
        auto taper = [&](int64_t iy) {
          const double ky = double(freq_index(iy, ny)) * fy;
          const T a = T(antialias(kx2 + ky * ky, p.kc, p.taper)) * (phase_free ? s : T(1));
          const cplx<T> f = phase_free ? cplx<T>{a, T(0)} : cmul(cx, cy[iy]);
          row[iy] = phase_free ? cplx<T>{a * row[iy].re, a * row[iy].im}
                               : cmul(row[iy], cplx<T>{a * f.re, a * f.im});
        };
        auto zero = [&](int64_t iy) { row[iy] = {T(0), T(0)}; };
        if (!phase_free) for_band<T>(ny, -1, m_in, flat);
        else if (s != T(1)) for_band<T>(ny, -1, m_in, scaled);
        for_band<T>(ny, m_in, m_out, taper);
        for_band<T>(ny, m_out, ny, zero);
      }
  });
}

}  // namespace multislice
}  // namespace em
