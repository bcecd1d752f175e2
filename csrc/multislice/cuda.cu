// Multislice CUDA launchers: grid launches over the math in multislice.h.
#include <string>

#include "../common/cuda_check.h"
#include "../common/dispatch.h"
#include "launch.h"
#include "multislice.h"

namespace em {
namespace multislice {
namespace {

constexpr int kThreads = 256;

// grid (ceil(nx*nyh / threads), M): one thread per half-spectrum bin of item m, looping its atoms.
template <class T>
__global__ void structure_factor_kernel(PotentialParams p, const double* __restrict__ pos,
                                        const int32_t* __restrict__ species,
                                        const int64_t* __restrict__ offsets,
                                        const T* __restrict__ ff, cplx<T>* __restrict__ out) {
  const int64_t nyh = p.ny / 2 + 1, plane = p.nx * nyh;
  const int64_t m = blockIdx.y;
  const int64_t a0 = offsets[m], a1 = offsets[m + 1];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < plane;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ix = i / nyh, iy = i % nyh;
    const int64_t fx = freq_index(ix, p.nx);
    double acc_re = 0.0, acc_im = 0.0, run_re = 0.0, run_im = 0.0;
    int32_t s = a0 < a1 ? species[a0] : 0;
    for (int64_t j = a0; j < a1; ++j) {
      const int32_t sj = species[j];
      if (sj != s) {
        const double f = double(ff[int64_t(s) * plane + i]);
        acc_re += f * run_re; acc_im += f * run_im;
        run_re = run_im = 0.0;
        s = sj;
      }
      const cplx<double> ex = structure_phase(fx, pos[2 * j] / p.lx);
      const cplx<double> ey = structure_phase(iy, pos[2 * j + 1] / p.ly);
      const cplx<double> e = cmul(ex, ey);
      run_re += e.re; run_im += e.im;
    }
    if (a0 < a1) {
      const double f = double(ff[int64_t(s) * plane + i]);
      acc_re += f * run_re; acc_im += f * run_im;
    }
    out[m * plane + i] = {T(acc_re), T(acc_im)};
  }
}

template <class T>
__global__ void deposit_kernel(PotentialParams p, const double* __restrict__ pos,
                               const int32_t* __restrict__ species,
                               const int64_t* __restrict__ offsets, T* __restrict__ out) {
  const int64_t m = blockIdx.y;
  const int64_t a0 = offsets[m], a1 = offsets[m + 1];
  const int64_t nx = p.nx, ny = p.ny;
  const float dx = float(p.lx / double(nx)), dy = float(p.ly / double(ny));
  for (int64_t j = a0 + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < a1;
       j += int64_t(gridDim.x) * blockDim.x) {
    const DepositCorners c = deposit_corners(pos[2 * j], pos[2 * j + 1], dx, dy, nx, ny);
    T* plane = out + (m * p.species + species[j]) * nx * ny;
    for (int k = 0; k < 4; ++k) atomicAdd(plane + c.index[k], T(c.weight[k]));
  }
}

template <class T>
__global__ void transmit_kernel(TransmitParams p, const T* __restrict__ v, cplx<T>* __restrict__ w,
                                int write_only) {
  const int64_t total = p.batch * p.pixels;
  const T sigma = T(p.sigma);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / p.pixels, k = i % p.pixels;
    const cplx<T> t = transmission(v[b * p.v_stride + k], sigma);
    w[i] = write_only ? t : cmul(w[i], t);
  }
}

template <class T>
__global__ void propagate_kernel(PropagateParams p, const double* __restrict__ tilt,
                                 cplx<T>* __restrict__ w) {
  const int64_t total = p.batch * p.nx * p.ny;
  const double fxs = 1.0 / (double(p.nx) * p.dx), fys = 1.0 / (double(p.ny) * p.dy);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iy = i % p.ny, ix = (i / p.ny) % p.nx, b = i / (p.nx * p.ny);
    const double* th = tilt + (p.tilt_stride ? 2 * b : 0);
    const double kx = double(freq_index(ix, p.nx)) * fxs, ky = double(freq_index(iy, p.ny)) * fys;
    const double a = antialias(kx * kx + ky * ky, p.kc, p.taper);
    if (a == 0.0) { w[i] = {T(0), T(0)}; continue; }
    const cplx<T> ex = cis(T(fresnel_phase_1d(kx, p.wavelength, p.dz, th[0])));
    const cplx<T> ey = cis(T(fresnel_phase_1d(ky, p.wavelength, p.dz, th[1])));
    const cplx<T> f = cmul(ex, ey);
    const T as = T(a * p.scale);
    w[i] = cmul(w[i], cplx<T>{as * f.re, as * f.im});
  }
}

}  // namespace

void structure_factor_cuda(const PotentialParams& p, const double* positions,
                           const int32_t* species, const int64_t* offsets, const void* ff,
                           void* out, cudaStream_t stream) {
  if (p.items == 0 || p.nx == 0 || p.ny == 0) return;
  require(p.items <= 65535, "multislice.structure_factor_cuda: at most 65535 items per call, got " +
                                std::to_string(p.items));
  dispatch_real_types(p.dtype, "multislice.structure_factor_cuda", [&](auto tag) {
    using T = decltype(tag);
    const int64_t plane = p.nx * (p.ny / 2 + 1);
    dim3 grid(unsigned(blocks_for(plane, kThreads, 65535)), unsigned(p.items));
    structure_factor_kernel<T><<<grid, kThreads, 0, stream>>>(
        p, positions, species, offsets, static_cast<const T*>(ff), static_cast<cplx<T>*>(out));
    check_launch("multislice.structure_factor_kernel");
  });
}

void deposit_cuda(const PotentialParams& p, const double* positions, const int32_t* species,
                  const int64_t* offsets, void* out, cudaStream_t stream) {
  if (p.items == 0 || p.nx == 0 || p.ny == 0) return;
  require(p.items <= 65535, "multislice.deposit_cuda: at most 65535 items per call, got " +
                                std::to_string(p.items));
  dispatch_real_types(p.dtype, "multislice.deposit_cuda", [&](auto tag) {
    using T = decltype(tag);
    dim3 grid(8, unsigned(p.items));
    deposit_kernel<T><<<grid, kThreads, 0, stream>>>(p, positions, species, offsets,
                                                     static_cast<T*>(out));
    check_launch("multislice.deposit_kernel");
  });
}

void transmit_cuda(const TransmitParams& p, const void* potential, void* wave, cudaStream_t s) {
  if (p.batch == 0 || p.pixels == 0) return;
  dispatch_real_types(p.dtype, "multislice.transmit_cuda", [&](auto tag) {
    using T = decltype(tag);
    transmit_kernel<T><<<blocks_for(p.batch * p.pixels, kThreads), kThreads, 0, s>>>(
        p, static_cast<const T*>(potential), static_cast<cplx<T>*>(wave), 0);
    check_launch("multislice.transmit_kernel");
  });
}

void transmission_cuda(const TransmitParams& p, const void* potential, void* out, cudaStream_t s) {
  if (p.batch == 0 || p.pixels == 0) return;
  dispatch_real_types(p.dtype, "multislice.transmission_cuda", [&](auto tag) {
    using T = decltype(tag);
    transmit_kernel<T><<<blocks_for(p.batch * p.pixels, kThreads), kThreads, 0, s>>>(
        p, static_cast<const T*>(potential), static_cast<cplx<T>*>(out), 1);
    check_launch("multislice.transmission_kernel");
  });
}

void propagate_cuda(const PropagateParams& p, const double* tilt, void* spectrum, cudaStream_t s) {
  if (p.batch == 0 || p.nx == 0 || p.ny == 0) return;
  dispatch_real_types(p.dtype, "multislice.propagate_cuda", [&](auto tag) {
    using T = decltype(tag);
    propagate_kernel<T><<<blocks_for(p.batch * p.nx * p.ny, kThreads), kThreads, 0, s>>>(
        p, tilt, static_cast<cplx<T>*>(spectrum));
    check_launch("multislice.propagate_kernel");
  });
}

}  // namespace multislice
}  // namespace em
