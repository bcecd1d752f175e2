// Scan launchers: the bridge between the bindings and the kernels. No CUDA, no torch.
#pragma once
#include <cstdint>
#include "../common/em_common.h"

namespace em {
namespace scan {

struct SampleParams {
  int64_t batch, height, width;  // images [B, H, W]
  int64_t probes;                // P probe positions per image
  int mode;                      // Mode (nearest / bilinear)
  int dtype;                     // DType of the images; positions and values use its acc type
  uint64_t seed;                 // RNG seed of the noise (counter-based: seed, b*P + p, draw)
  double dose;                   // shot noise: counts per unit intensity (<= 0: off)
  double read_noise;             // Gaussian detector noise, std in intensity units (<= 0: off)
};

// Pointers (C-contiguous, no aliasing; acc = float64 for float64 images, else float32):
//   images          [B, H, W]    dtype
//   positions       [B, P, 2]    acc   (row, col) in pixels; pixel (i, j) is [i,i+1) x [j,j+1)
//   values          [B, P]       acc   output
//   grad_values     [B, P]       acc
//   grad_images     [B, H, W]    acc   output (overwritten)
//   grad_positions  [B, P, 2]    acc   output, may be null (not wanted, or nearest mode: zeros)
void sample_cpu(const SampleParams& p, const void* images, const void* positions, void* values);
void sample_backward_cpu(const SampleParams& p, const void* grad_values, const void* images,
                         const void* positions, void* grad_images, void* grad_positions);
void sample_cuda(const SampleParams& p, const void* images, const void* positions, void* values,
                 cudaStream_t stream);
void sample_backward_cuda(const SampleParams& p, const void* grad_values, const void* images,
                          const void* positions, void* grad_images, void* grad_positions,
                          cudaStream_t stream);

struct RasterParams {
  int64_t batch, height, width;  // output images [B, H, W]
  int64_t probes;                // P probes per image
  int dtype;                     // DType of values/positions/outputs: F32 or F64 only
};

// Pointers (C-contiguous, no aliasing; T = the float type named by dtype):
//   values     [B, P]      T    probe values
//   positions  [B, P, 2]   T    (row, col) in pixels; each probe lands in floor(pos), clamped
//   image      [B, H, W]   T    output: mean of the probe values in each pixel (0 where none)
//   counts     [B, H, W]   T    output: number of probes in each pixel
//   infilled   [B, H, W]   T    output: image, with each empty pixel given its nearest
//                               non-empty pixel's value (0 if the image has no probe)
//   source     [B, H, W]   int64 output: flat index h*W + w of the pixel each infilled value
//                               comes from (-1 if none)
//   nearest    [B, H, W]   int32 workspace
//   envelope_v [B, H, W]   int32 workspace; envelope_z [B, H, W + 1] float64 workspace
void rasterize_cpu(const RasterParams& p, const void* values, const void* positions, void* image,
                   void* counts, void* infilled, int64_t* source, int32_t* nearest,
                   int32_t* envelope_v, double* envelope_z);
void rasterize_cuda(const RasterParams& p, const void* values, const void* positions, void* image,
                    void* counts, void* infilled, int64_t* source, int32_t* nearest,
                    int32_t* envelope_v, double* envelope_z, cudaStream_t stream);

// Gradient of the values from the gradients of image and infilled:
//   grad_values[b, p] = (grad_image[pix] + sum_{x: source[x] = pix} grad_infilled[x]) / counts[pix]
// with pix the pixel of probe p. pixel_grad [B, H, W] T is workspace.
void rasterize_backward_cpu(const RasterParams& p, const void* grad_image,
                            const void* grad_infilled, const void* positions, const void* counts,
                            const int64_t* source, void* pixel_grad, void* grad_values);
void rasterize_backward_cuda(const RasterParams& p, const void* grad_image,
                             const void* grad_infilled, const void* positions, const void* counts,
                             const int64_t* source, void* pixel_grad, void* grad_values,
                             cudaStream_t stream);

// One step of the adaptive-scan environment (thesis ch. 5): every batch element scans a straight
// segment of `probes` positions start + i * d, i = 0..probes-1, with d = step * (cos a, sin a)
// for an angle action a (rad; a = 0 moves along +row), or d = the action itself for vector
// actions; the next start is start + probes * d.
struct SegmentParams {
  int64_t batch, height, width;  // images [B, H, W]
  int64_t probes;                // S probes per segment
  int64_t episode_probes;        // T*S: row length of the episode buffers
  int64_t offset;                // t*S: where this segment goes in the episode buffers
  int mode, dtype;               // Mode; DType of the images (others: its acc type)
  int vector_actions;            // 0: actions [B] angles; 1: actions [B, 2] per-probe steps
  uint64_t seed;                 // noise of probe (b, j) uses index b*episode_probes + j
  double dose, read_noise;       // as SampleParams
  double step;                   // probe spacing for angle actions [px]
  double edge_penalty;           // cost when the next start leaves [0, H] x [0, W]
};

// Pointers (C-contiguous; acc as above):
//   images [B, H, W] dtype; start [B, 2] acc; actions [B] or [B, 2] acc;
//   positions [B, T*S, 2] acc and values [B, T*S] acc: columns offset..offset+S-1 written;
//   end [B, 2] acc (must not alias start); penalty [B] acc.
void segment_cpu(const SegmentParams& p, const void* images, const void* start,
                 const void* actions, void* positions, void* values, void* end, void* penalty);
void segment_cuda(const SegmentParams& p, const void* images, const void* start,
                  const void* actions, void* positions, void* values, void* end, void* penalty,
                  cudaStream_t stream);

}  // namespace scan
}  // namespace em
