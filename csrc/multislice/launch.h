// Multislice launchers: the bridge between the bindings and the kernels. No CUDA, no torch.
// Every pointer is C-contiguous; outputs never alias inputs unless stated ("in place").
// dtype is the DType code (F32 or F64) of the real component; complex data is interleaved
// (re, im) of that precision, i.e. torch.complex64 or torch.complex128.
#pragma once
#include <cstdint>

#include "../common/em_common.h"

namespace em {
namespace multislice {

// Exact structure-factor projected potential: for each item m (a slice of one structure),
//   out[m, ix, iy] = sum_{j in m} ff[species_j, ix, iy] * exp(-2 pi i (kx x_j + ky y_j))
// on the half spectrum iy < ny/2 + 1 (torch.fft.rfft2 layout over the last two axes).
struct PotentialParams {
  int64_t items;    // M
  int64_t nx, ny;   // real-space grid; spectrum has nyh = ny / 2 + 1 columns
  int64_t species;  // S
  double lx, ly;    // periodic cell extent nx*dx, ny*dy [Å]
  int dtype;        // F32 or F64: ff is real dtype, out is complex dtype
};
//   positions [N, 2] float64 (x, y) [Å]; species [N] int32 in [0, S), sorted within each item
//   offsets   [M + 1] int64, atoms of item m are offsets[m] .. offsets[m+1]-1
//   ff        [S, nx, nyh] real: form factor per species on the half spectrum
//   out       [M, nx, nyh] complex (written, not accumulated)
void structure_factor_cpu(const PotentialParams& p, const double* positions, const int32_t* species,
                          const int64_t* offsets, const void* ff, void* out);
void structure_factor_cuda(const PotentialParams& p, const double* positions,
                           const int32_t* species, const int64_t* offsets, const void* ff,
                           void* out, cudaStream_t stream);

// Bilinear (cloud-in-cell) deposit, abTEM-compatible: positions are converted to pixel units in
// float32, each atom adds weights (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy to its 4 nodes
// (periodic wrap) of its species' plane.
//   out [M, S, nx, ny] real dtype, must be zeroed by the caller (accumulated)
void deposit_cpu(const PotentialParams& p, const double* positions, const int32_t* species,
                 const int64_t* offsets, void* out);
void deposit_cuda(const PotentialParams& p, const double* positions, const int32_t* species,
                  const int64_t* offsets, void* out, cudaStream_t stream);

// Transmission from the potential, computed on the fly.
struct TransmitParams {
  int64_t batch;     // B waves
  int64_t pixels;    // nx * ny
  int64_t v_stride;  // 0: one potential for all waves; pixels: one potential per wave
  double sigma;      // interaction parameter [rad/(V·Å)]
  int dtype;
};
//   potential [B or 1, pixels] real; wave [B, pixels] complex, multiplied in place by
//   exp(i sigma potential). With wave_in == nullptr the output is exp(i sigma V) itself
//   (the transmission function, out [B, pixels]).
void transmit_cpu(const TransmitParams& p, const void* potential, void* wave);
void transmission_cpu(const TransmitParams& p, const void* potential, void* out);
void transmit_cuda(const TransmitParams& p, const void* potential, void* wave, cudaStream_t s);
void transmission_cuda(const TransmitParams& p, const void* potential, void* out, cudaStream_t s);

// Fresnel propagation with the antialias aperture and beam tilt, applied in one pass to a
// wave spectrum (unshifted FFT layout), times a real scale. dz = 0 applies the band limit (and
// the scale, nothing else).
struct PropagateParams {
  int64_t batch, nx, ny;  // spectrum [B, nx, ny] complex, in place
  double dx, dy;          // real-space sampling [Å]
  double wavelength;      // relativistic wavelength [Å]
  double dz;              // propagation distance [Å]
  double kc, taper;       // antialias cutoff and taper width [1/Å]; kc <= 0: no aperture
  int64_t tilt_stride;    // 0: one tilt for all waves; 2: tilt [B, 2]
  int dtype;
  double scale = 1.0;     // real factor on the whole result (folds an inverse-FFT 1/N in)
};
//   tilt [2] or [B, 2] float64: (tan theta_x, tan theta_y)
void propagate_cpu(const PropagateParams& p, const double* tilt, void* spectrum);
void propagate_cuda(const PropagateParams& p, const double* tilt, void* spectrum, cudaStream_t s);

}  // namespace multislice
}  // namespace em
