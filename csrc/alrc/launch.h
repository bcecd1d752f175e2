// ALRC launchers: the bridge between the bindings and the kernels. No CUDA, no torch.
#pragma once
#include <cstdint>
#include "../common/em_common.h"

namespace em {
namespace alrc {

struct Params {
  int64_t batch;        // B
  int64_t elems;        // N: elements per example (product of the non-batch dims)
  int kind;             // ErrorKind
  int per_pixel;        // 0: one loss and one moment pair per example batch;
                        // 1: one loss per element, moments of shape [N]
  int dtype;            // DType of pred/target/grad_pred
  double n_up, n_down;  // clip at mu1 + n_up*sigma and mu1 - n_down*sigma (inf: off)
  double decay;         // EMA decay of the moments, in [0, 1)
};

// Pointers (all C-contiguous, no aliasing):
//   pred, target       [B, N] dtype
//   mu1, mu2           [1] or [N] float32   moments before this step (read only)
//   loss, scale        [B] or [B, N] acc    clipped loss and its gradient factor
//                                          (acc = float64 for float64 input, else float32)
//   mu1_out, mu2_out   like mu1             moments after this step
//   workspace          [workspace_doubles(p)] float64, CUDA only
void forward_cpu(const Params& p, const void* pred, const void* target, const float* mu1,
                 const float* mu2, void* loss, void* scale, float* mu1_out, float* mu2_out);
// grad_loss like loss (acc), grad_pred like pred (dtype).
void backward_cpu(const Params& p, const void* grad_loss, const void* pred, const void* target,
                  const void* scale, void* grad_pred);

int64_t workspace_doubles(const Params& p);
void forward_cuda(const Params& p, const void* pred, const void* target, const float* mu1,
                  const float* mu2, void* loss, void* scale, float* mu1_out, float* mu2_out,
                  double* workspace, cudaStream_t stream);
void backward_cuda(const Params& p, const void* grad_loss, const void* pred, const void* target,
                   const void* scale, void* grad_pred, cudaStream_t stream);

constexpr int64_t kCudaChunk = 2048;  // elements per block in the per-example reduction

}  // namespace alrc
}  // namespace em
