// t-SNE launchers: the bridge between the bindings and the kernels. No CUDA, no torch.
// Every pointer is C-contiguous with no aliasing; T is float32 or float64 (dtype code), and
// index arrays are int64.
#pragma once
#include <cstdint>
#include "../common/em_common.h"

namespace em {
namespace tsne {

struct PerplexityParams {
  int64_t n;          // rows
  int64_t k;          // neighbours per row
  int dtype;          // DType of d2 / p (F32 or F64)
  double perplexity;  // target perplexity (effective number of neighbours), 1 < perp <= k
  double tol;         // |H - ln perp| tolerance [nats]
  int max_iter;       // bisection steps
};
// d2 [n, k] T squared input-space distances to the k neighbours; p [n, k] T conditional
// affinities p_{j|i} (rows sum to 1); beta [n] float64 precisions [1/input units^2].
void perplexity_cpu(const PerplexityParams& q, const void* d2, void* p, double* beta);
void perplexity_cuda(const PerplexityParams& q, const void* d2, void* p, double* beta,
                     cudaStream_t stream);

struct NeighborParams {
  int64_t n;  // rows of x and idx
  int64_t k;  // neighbours per row
  int64_t d;  // features per row
  int dtype;  // DType of x / d2 (F32 or F64)
};
// x [n, d] T; idx [n, k] int64 in [0, n); d2 [n, k] T = |x_i - x_idx[i, j]|^2, each summed in
// double from the differences (no |a|^2 + |b|^2 - 2ab cancellation).
void neighbor_d2_cpu(const NeighborParams& q, const void* x, const int64_t* idx, void* d2);
void neighbor_d2_cuda(const NeighborParams& q, const void* x, const int64_t* idx, void* d2,
                      cudaStream_t stream);

struct AttractiveParams {
  int64_t n;           // points (CSR rows)
  int dtype;           // DType of y / values / force
  int want_kl;         // 1: also write plogw
  int index_bits = 64;  // 32 or 64: indices are int32 or int64 (int32 moves a third fewer bytes)
};
// y [n, 2] T; indptr [n + 1] int64; indices [nnz] int32 or int64; values [nnz] T (symmetric P);
// force [n, 2] T = sum_j p_ij w_ij (y_i - y_j); plogw [n] float64 = sum_j p_ij ln w_ij (if want_kl).
void attractive_cpu(const AttractiveParams& q, const void* y, const int64_t* indptr,
                    const void* indices, const void* values, void* force, double* plogw);
void attractive_cuda(const AttractiveParams& q, const void* y, const int64_t* indptr,
                     const void* indices, const void* values, void* force, double* plogw,
                     cudaStream_t stream);

struct RepulsiveParams {
  int64_t n;  // points
  int dtype;  // DType of y / force
};
// y [n, 2] T; force [n, 2] T = sum_{j != i} w_ij^2 (y_i - y_j) (not divided by Z);
// zrow [n] float64 = sum_{j != i} w_ij. Exact O(n^2), tiled.
void repulsive_exact_cpu(const RepulsiveParams& q, const void* y, void* force, double* zrow);
void repulsive_exact_cuda(const RepulsiveParams& q, const void* y, void* force, double* zrow,
                          cudaStream_t stream);

struct InterpParams {
  int64_t n;      // points
  int dtype;      // DType of y / grid / force
  int n_boxes;    // boxes per dimension (square grid)
  int p;          // interpolation nodes per box per dimension (1..8); grid side m = n_boxes * p
  double lower_x, lower_y;  // lower corner of the grid [embedding units]
  double box_width;         // h [embedding units]; node spacing is h / p
};
constexpr int kMaxInterp = 8;
// Spread: grid [3, m, m] T (overwritten) = sum over points of the Lagrange weights times the
// charges (1, y1, y2), coordinates relative to the grid centre. Gather: potentials [3, m, m] T
// (grid convolved with w^2) are interpolated back to the points; force [n, 2] T =
// sum_j w_ij^2 (y_i - y_j) and zrow [n] float64 with sum_i zrow_i = Z (see combine_potentials),
// both approximate.
// order [n] int64 and box_start [n_boxes + 1] int64 are CPU scratch (points bucketed by box row).
void interp_spread_cpu(const InterpParams& q, const void* y, void* grid, int64_t* order,
                       int64_t* box_start);
void interp_gather_cpu(const InterpParams& q, const void* y, const void* potentials, void* force,
                       double* zrow);
void interp_spread_cuda(const InterpParams& q, const void* y, void* grid, cudaStream_t stream);
void interp_gather_cuda(const InterpParams& q, const void* y, const void* potentials, void* force,
                        double* zrow, cudaStream_t stream);

struct StepParams {
  int64_t n;        // points
  int dtype;        // DType of every array
  double alpha;     // exaggeration of the attractive term
  double inv_z;     // 1 / Z
  double momentum;  // in [0, 1)
  double lr;        // learning rate (openTSNE convention: no factor 4)
  double min_gain;  // gains are clipped below at this
  double max_step;  // per-point step norm clip [embedding units] (<= 0: off)
};
// In place: y, update, gains [n, 2] T; attr, rep [n, 2] T read only. After the step y is
// re-centred (mean subtracted) and bbox [4] float64 = (min x, min y, max x, max y) of the new y.
// workspace [step_workspace_doubles(n)] float64 (CUDA only).
void step_cpu(const StepParams& q, void* y, void* update, void* gains, const void* attr,
              const void* rep, double* bbox);
int64_t step_workspace_doubles(int64_t n);
void step_cuda(const StepParams& q, void* y, void* update, void* gains, const void* attr,
               const void* rep, double* bbox, double* workspace, cudaStream_t stream);

}  // namespace tsne
}  // namespace em
