// t-SNE CUDA launchers: grid launches over the math in tsne.h.
#include <stdexcept>
#include <string>

#include "../common/cuda_check.h"
#include "../common/dispatch.h"
#include "launch.h"
#include "tsne.h"

namespace em {
namespace tsne {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void perplexity_kernel(PerplexityParams q, double log_perp, const T* __restrict__ d2,
                                  T* __restrict__ p, double* __restrict__ beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < q.n;
       i += int64_t(gridDim.x) * blockDim.x)
    beta[i] = calibrate_row(d2 + i * q.k, int(q.k), log_perp, q.tol, q.max_iter, p + i * q.k);
}

template <class T>
__global__ void neighbor_d2_kernel(NeighborParams q, const T* __restrict__ x,
                                   const int64_t* __restrict__ idx, T* __restrict__ d2) {
  const int64_t total = q.n * q.k;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    d2[e] = T(squared_distance(x + (e / q.k) * q.d, x + idx[e] * q.d, q.d));
}

template <class T, class I>
__global__ void attractive_kernel(AttractiveParams q, const T* __restrict__ y,
                                  const int64_t* __restrict__ indptr,
                                  const I* __restrict__ indices,
                                  const T* __restrict__ values, T* __restrict__ force,
                                  double* __restrict__ plogw) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < q.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T fx, fy;
    double kl;
    attractive_row<T, I, T>(y, indices, values, i, indptr[i], indptr[i + 1], q.want_kl != 0, &fx,
                            &fy, &kl);
    force[2 * i] = fx;
    force[2 * i + 1] = fy;
    if (q.want_kl) plogw[i] = kl;
  }
}

// Classic tiled N-body: each thread owns one row i, the block stages kThreads points j at a
// time in shared memory. Per-tile sums in T, the running sums in double; fixed order, so the
// result is deterministic.
template <class T>
__global__ void repulsive_exact_kernel(RepulsiveParams q, const T* __restrict__ y,
                                       T* __restrict__ force, double* __restrict__ zrow) {
  __shared__ T sx[kThreads], sy[kThreads];
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const bool active = i < q.n;
  const T xi = active ? y[2 * i] : T(0), yi = active ? y[2 * i + 1] : T(0);
  double fx = 0.0, fy = 0.0, z = 0.0;
  for (int64_t j0 = 0; j0 < q.n; j0 += kThreads) {
    const int64_t j = j0 + threadIdx.x;
    sx[threadIdx.x] = j < q.n ? y[2 * j] : T(0);
    sy[threadIdx.x] = j < q.n ? y[2 * j + 1] : T(0);
    __syncthreads();
    const int cnt = int((q.n - j0) < kThreads ? (q.n - j0) : kThreads);
    T rx = T(0), ry = T(0), zz = T(0);
#pragma unroll 8
    for (int t = 0; t < cnt; ++t) repulsive_pair(xi, yi, sx[t], sy[t], rx, ry, zz);
    fx += double(rx);
    fy += double(ry);
    z += double(zz);
    __syncthreads();
  }
  if (active) {
    force[2 * i] = T(fx);
    force[2 * i + 1] = T(fy);
    zrow[i] = z - 1.0;
  }
}

template <class A> struct GridFrame {
  A lx, ly, h, cx, cy;
  int nb, p;
  int64_t m;
};
template <class A> GridFrame<A> frame(const InterpParams& q) {
  return GridFrame<A>{A(q.lower_x), A(q.lower_y), A(q.box_width),
                      A(q.lower_x + 0.5 * q.n_boxes * q.box_width),
                      A(q.lower_y + 0.5 * q.n_boxes * q.box_width), q.n_boxes, q.p,
                      int64_t(q.n_boxes) * q.p};
}

template <class T> struct AtomicAdd {
  T* grid;
  __device__ void operator()(int64_t k, T w) const { atomicAdd(grid + k, w); }
};

// Spreading with atomics: the sum order, hence the last bits, can vary run to run.
template <class T>
__global__ void spread_kernel(int64_t n, GridFrame<T> g, const T* __restrict__ y,
                              T* __restrict__ grid) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    spread_point(i, g, y, AtomicAdd<T>{grid});
}

template <class T>
__global__ void gather_kernel(int64_t n, GridFrame<T> g, const T* __restrict__ y,
                              const T* __restrict__ pot, T* __restrict__ force,
                              double* __restrict__ zrow) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    gather_point(i, g, y, pot, force, zrow);
}

constexpr int kStepBlocks = 1024;  // fixed grid: per-block partials in a fixed order

template <class V, class Op> __device__ V block_reduce(V v, V* shared, Op op) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  const V r = shared[0];
  __syncthreads();
  return r;
}
struct Add { __device__ double operator()(double a, double b) const { return a + b; } };
struct Min { __device__ double operator()(double a, double b) const { return a < b ? a : b; } };
struct Max { __device__ double operator()(double a, double b) const { return a > b ? a : b; } };

// Step every point, then per-block sums of the new coordinates into work[0 : 2 * blocks].
template <class T>
__global__ void step_kernel(StepParams q, T* __restrict__ y, T* __restrict__ u,
                            T* __restrict__ gains, const T* __restrict__ attr,
                            const T* __restrict__ rep, double* __restrict__ work) {
  __shared__ double shared[kThreads];
  double sx = 0.0, sy = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < q.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    step_point(y + 2 * i, u + 2 * i, gains + 2 * i, attr + 2 * i, rep + 2 * i, T(q.alpha),
               T(q.inv_z), T(q.momentum), T(q.lr), T(q.min_gain), T(q.max_step));
    sx += double(y[2 * i]);
    sy += double(y[2 * i + 1]);
  }
  sx = block_reduce(sx, shared, Add());
  sy = block_reduce(sy, shared, Add());
  if (threadIdx.x == 0) { work[2 * blockIdx.x] = sx; work[2 * blockIdx.x + 1] = sy; }
}

// One block: the mean from the partials, into work[4 * kStepBlocks : + 2].
__global__ void mean_kernel(int64_t n, int blocks, double* __restrict__ work) {
  __shared__ double shared[kThreads];
  double sx = 0.0, sy = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) { sx += work[2 * b]; sy += work[2 * b + 1]; }
  sx = block_reduce(sx, shared, Add());
  sy = block_reduce(sy, shared, Add());
  if (threadIdx.x == 0) {
    work[4 * kStepBlocks] = sx / double(n);
    work[4 * kStepBlocks + 1] = sy / double(n);
  }
}

// Subtract the mean; per-block min/max into work[0 : 4 * blocks].
template <class T>
__global__ void centre_kernel(int64_t n, T* __restrict__ y, double* __restrict__ work) {
  __shared__ double shared[kThreads];
  const T cx = T(work[4 * kStepBlocks]), cy = T(work[4 * kStepBlocks + 1]);
  double l0 = INFINITY, l1 = INFINITY, h0 = -INFINITY, h1 = -INFINITY;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[2 * i] -= cx;
    y[2 * i + 1] -= cy;
    const double v0 = double(y[2 * i]), v1 = double(y[2 * i + 1]);
    l0 = fmin(l0, v0); h0 = fmax(h0, v0); l1 = fmin(l1, v1); h1 = fmax(h1, v1);
  }
  l0 = block_reduce(l0, shared, Min());
  l1 = block_reduce(l1, shared, Min());
  h0 = block_reduce(h0, shared, Max());
  h1 = block_reduce(h1, shared, Max());
  if (threadIdx.x == 0) {
    work[4 * blockIdx.x] = l0; work[4 * blockIdx.x + 1] = l1;
    work[4 * blockIdx.x + 2] = h0; work[4 * blockIdx.x + 3] = h1;
  }
}

__global__ void bbox_kernel(int blocks, const double* __restrict__ work, double* __restrict__ bbox) {
  __shared__ double shared[kThreads];
  double l0 = INFINITY, l1 = INFINITY, h0 = -INFINITY, h1 = -INFINITY;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    l0 = fmin(l0, work[4 * b]); l1 = fmin(l1, work[4 * b + 1]);
    h0 = fmax(h0, work[4 * b + 2]); h1 = fmax(h1, work[4 * b + 3]);
  }
  l0 = block_reduce(l0, shared, Min());
  l1 = block_reduce(l1, shared, Min());
  h0 = block_reduce(h0, shared, Max());
  h1 = block_reduce(h1, shared, Max());
  if (threadIdx.x == 0) { bbox[0] = l0; bbox[1] = l1; bbox[2] = h0; bbox[3] = h1; }
}

}  // namespace

void perplexity_cuda(const PerplexityParams& q, const void* d2, void* p, double* beta,
                     cudaStream_t stream) {
  if (q.n == 0) return;
  dispatch_real_types(q.dtype, "tsne.perplexity_cuda", [&](auto tag) {
    using T = decltype(tag);
    perplexity_kernel<T><<<blocks_for(q.n, kThreads), kThreads, 0, stream>>>(
        q, log(q.perplexity), static_cast<const T*>(d2), static_cast<T*>(p), beta);
    check_launch("tsne.perplexity_kernel");
  });
}

void neighbor_d2_cuda(const NeighborParams& q, const void* x, const int64_t* idx, void* d2,
                      cudaStream_t stream) {
  if (q.n == 0 || q.k == 0) return;
  dispatch_real_types(q.dtype, "tsne.neighbor_d2_cuda", [&](auto tag) {
    using T = decltype(tag);
    neighbor_d2_kernel<T><<<blocks_for(q.n * q.k, kThreads), kThreads, 0, stream>>>(
        q, static_cast<const T*>(x), idx, static_cast<T*>(d2));
    check_launch("tsne.neighbor_d2_kernel");
  });
}

void attractive_cuda(const AttractiveParams& q, const void* y, const int64_t* indptr,
                     const void* indices, const void* values, void* force, double* plogw,
                     cudaStream_t stream) {
  if (q.n == 0) return;
  require(q.index_bits == 32 || q.index_bits == 64,
          "tsne.attractive_cuda: index_bits must be 32 or 64, got " + std::to_string(q.index_bits));
  dispatch_real_types(q.dtype, "tsne.attractive_cuda", [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto itag) {
      using I = decltype(itag);
      attractive_kernel<T, I><<<blocks_for(q.n, kThreads), kThreads, 0, stream>>>(
          q, static_cast<const T*>(y), indptr, static_cast<const I*>(indices),
          static_cast<const T*>(values), static_cast<T*>(force), plogw);
    };
    if (q.index_bits == 32) launch(int32_t{}); else launch(int64_t{});
    check_launch("tsne.attractive_kernel");
  });
}

void repulsive_exact_cuda(const RepulsiveParams& q, const void* y, void* force, double* zrow,
                          cudaStream_t stream) {
  if (q.n == 0) return;
  dispatch_real_types(q.dtype, "tsne.repulsive_exact_cuda", [&](auto tag) {
    using T = decltype(tag);
    const int64_t blocks = (q.n + kThreads - 1) / kThreads;
    repulsive_exact_kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(
        q, static_cast<const T*>(y), static_cast<T*>(force), zrow);
    check_launch("tsne.repulsive_exact_kernel");
  });
}

void interp_spread_cuda(const InterpParams& q, const void* y, void* grid, cudaStream_t stream) {
  require(q.p >= 1 && q.p <= kMaxInterp, "tsne.interp_spread_cuda: p must be in [1, 8], got " +
                                             std::to_string(q.p));
  dispatch_real_types(q.dtype, "tsne.interp_spread_cuda", [&](auto tag) {
    using T = decltype(tag);
    const GridFrame<T> g = frame<T>(q);
    cudaMemsetAsync(grid, 0, sizeof(T) * kCharges * g.m * g.m, stream);
    check_launch("tsne.interp_spread_cuda (memset)");
    if (q.n == 0) return;
    spread_kernel<T><<<blocks_for(q.n, kThreads), kThreads, 0, stream>>>(
        q.n, g, static_cast<const T*>(y), static_cast<T*>(grid));
    check_launch("tsne.spread_kernel");
  });
}

void interp_gather_cuda(const InterpParams& q, const void* y, const void* potentials, void* force,
                        double* zrow, cudaStream_t stream) {
  if (q.n == 0) return;
  require(q.p >= 1 && q.p <= kMaxInterp, "tsne.interp_gather_cuda: p must be in [1, 8], got " +
                                             std::to_string(q.p));
  dispatch_real_types(q.dtype, "tsne.interp_gather_cuda", [&](auto tag) {
    using T = decltype(tag);
    gather_kernel<T><<<blocks_for(q.n, kThreads), kThreads, 0, stream>>>(
        q.n, frame<T>(q), static_cast<const T*>(y), static_cast<const T*>(potentials),
        static_cast<T*>(force), zrow);
    check_launch("tsne.gather_kernel");
  });
}

void step_cuda(const StepParams& q, void* y, void* update, void* gains, const void* attr,
               const void* rep, double* bbox, double* workspace, cudaStream_t stream) {
  if (q.n == 0) return;
  dispatch_real_types(q.dtype, "tsne.step_cuda", [&](auto tag) {
    using T = decltype(tag);
    const int blocks = int(blocks_for(q.n, kThreads, kStepBlocks));
    step_kernel<T><<<blocks, kThreads, 0, stream>>>(
        q, static_cast<T*>(y), static_cast<T*>(update), static_cast<T*>(gains),
        static_cast<const T*>(attr), static_cast<const T*>(rep), workspace);
    check_launch("tsne.step_kernel");
    mean_kernel<<<1, kThreads, 0, stream>>>(q.n, blocks, workspace);
    check_launch("tsne.mean_kernel");
    centre_kernel<T><<<blocks, kThreads, 0, stream>>>(q.n, static_cast<T*>(y), workspace);
    check_launch("tsne.centre_kernel");
    bbox_kernel<<<1, kThreads, 0, stream>>>(blocks, workspace, bbox);
    check_launch("tsne.bbox_kernel");
  });
}

}  // namespace tsne
}  // namespace em
