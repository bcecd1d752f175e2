// Scan CUDA launchers: grid launches over the math in scan.h.
#include "../common/cuda_check.h"
#include "../common/dispatch.h"
#include "launch.h"
#include "scan.h"

namespace em {
namespace scan {
namespace {

constexpr int kThreads = 256;

#define EM_GRID_LOOP(i, n)                                                       \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

template <class T>
__global__ void sample_kernel(SampleParams p, const T* __restrict__ images,
                              const typename Storage<T>::acc* __restrict__ positions,
                              typename Storage<T>::acc* __restrict__ values) {
  using A = typename Storage<T>::acc;
  EM_GRID_LOOP(i, p.batch * p.probes)
      values[i] = sample_probe<T, A>(p, images + (i / p.probes) * p.height * p.width, positions, i);
}

template <class A> __global__ void zero_kernel(A* __restrict__ out, int64_t n) {
  EM_GRID_LOOP(i, n) out[i] = A(0);
}

template <class T>
__global__ void sample_backward_kernel(SampleParams p, const typename Storage<T>::acc* __restrict__ g,
                                       const T* __restrict__ images,
                                       const typename Storage<T>::acc* __restrict__ positions,
                                       typename Storage<T>::acc* __restrict__ grad_images,
                                       typename Storage<T>::acc* __restrict__ grad_positions) {
  using A = typename Storage<T>::acc;
  const int64_t hw = p.height * p.width;
  EM_GRID_LOOP(i, p.batch * p.probes) {
    const ProbeGrad<T, A> r = sample_probe_grad<T, A>(p, images, positions, g[i], i);
    A* gi = grad_images + (i / p.probes) * hw;
    const int kmax = static_cast<Mode>(p.mode) == Mode::Nearest ? 1 : 4;
    for (int k = 0; k < kmax; ++k) atomicAdd(gi + r.index[k], r.weight[k]);
    if (grad_positions) { grad_positions[2 * i] = r.dy; grad_positions[2 * i + 1] = r.dx; }
  }
}

template <class A>
__global__ void deposit_kernel(RasterParams p, const A* __restrict__ values,
                               const A* __restrict__ positions, A* __restrict__ image,
                               A* __restrict__ counts) {
  const int64_t hw = p.height * p.width;
  EM_GRID_LOOP(i, p.batch * p.probes) {
    const int64_t pix = (i / p.probes) * hw + probe_pixel(positions, i, p.height, p.width);
    atomicAdd(image + pix, values[i]);
    atomicAdd(counts + pix, A(1));
  }
}

template <class A> __global__ void mean_kernel(int64_t n, A* __restrict__ image, const A* __restrict__ counts) {
  EM_GRID_LOOP(i, n) if (counts[i] > A(0)) image[i] /= counts[i];
}

template <class A>
__global__ void columns_kernel(RasterParams p, const A* __restrict__ counts, int32_t* __restrict__ nearest) {
  const int64_t hw = p.height * p.width;
  EM_GRID_LOOP(t, p.batch * p.width) {
    const int64_t b = t / p.width, c = t % p.width;
    nearest_in_column(counts + b * hw, p.height, p.width, c, nearest + b * hw);
  }
}

__global__ void rows_kernel(RasterParams p, const int32_t* __restrict__ nearest, int32_t* __restrict__ env_v,
                            double* __restrict__ env_z, int64_t* __restrict__ source) {
  const int64_t H = p.height, W = p.width, hw = H * W;
  EM_GRID_LOOP(t, p.batch * H) {
    const int64_t b = t / H, r = t % H;
    nearest_in_row(nearest + b * hw, W, r, env_v + b * hw + r * W, env_z + (b * H + r) * (W + 1),
                   source + b * hw);
  }
}

template <class A>
__global__ void gather_kernel(RasterParams p, const A* __restrict__ image, const int64_t* __restrict__ source,
                              A* __restrict__ infilled) {
  const int64_t hw = p.height * p.width;
  EM_GRID_LOOP(i, p.batch * hw) {
    const int64_t s = source[i];
    infilled[i] = s >= 0 ? image[(i / hw) * hw + s] : A(0);
  }
}

template <class A>
__global__ void pixel_grad_kernel(RasterParams p, const A* __restrict__ grad_image,
                                  const A* __restrict__ grad_infilled, const int64_t* __restrict__ source,
                                  A* __restrict__ pixel_grad) {
  const int64_t hw = p.height * p.width;
  EM_GRID_LOOP(i, p.batch * hw) {
    if (grad_image) atomicAdd(pixel_grad + i, grad_image[i]);
    if (grad_infilled && source[i] >= 0) atomicAdd(pixel_grad + (i / hw) * hw + source[i], grad_infilled[i]);
  }
}

template <class A>
__global__ void probe_grad_kernel(RasterParams p, const A* __restrict__ positions, const A* __restrict__ counts,
                                  const A* __restrict__ pixel_grad, A* __restrict__ grad_values) {
  const int64_t hw = p.height * p.width;
  EM_GRID_LOOP(i, p.batch * p.probes) {
    const int64_t pix = (i / p.probes) * hw + probe_pixel(positions, i, p.height, p.width);
    grad_values[i] = pixel_grad[pix] / counts[pix];
  }
}

template <class T>
__global__ void segment_kernel(SegmentParams p, const T* __restrict__ images,
                               const typename Storage<T>::acc* __restrict__ start,
                               const typename Storage<T>::acc* __restrict__ actions,
                               typename Storage<T>::acc* __restrict__ positions,
                               typename Storage<T>::acc* __restrict__ values,
                               typename Storage<T>::acc* __restrict__ end,
                               typename Storage<T>::acc* __restrict__ penalty) {
  using A = typename Storage<T>::acc;
  EM_GRID_LOOP(t, p.batch * p.probes) {
    const int64_t b = t / p.probes;
    A dy, dx;
    segment_direction(p, actions, b, &dy, &dx);
    segment_probe<T, A>(p, images, start, dy, dx, positions, values, end, penalty, b, t - b * p.probes);
  }
}

}  // namespace

void sample_cuda(const SampleParams& p, const void* images, const void* positions, void* values,
                 cudaStream_t stream) {
  const int64_t n = p.batch * p.probes;
  if (n == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "scan.sample_cuda", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Storage<T>::acc;
    sample_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const T*>(images), static_cast<const A*>(positions), static_cast<A*>(values));
    check_launch("scan.sample_kernel");
  });
}

void sample_backward_cuda(const SampleParams& p, const void* grad_values, const void* images,
                          const void* positions, void* grad_images, void* grad_positions,
                          cudaStream_t stream) {
  const int64_t hw = p.batch * p.height * p.width;
  if (hw == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "scan.sample_backward_cuda", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Storage<T>::acc;
    zero_kernel<A><<<blocks_for(hw, kThreads), kThreads, 0, stream>>>(static_cast<A*>(grad_images), hw);
    check_launch("scan.zero_kernel");
    const int64_t n = p.batch * p.probes;
    if (n == 0) return;
    sample_backward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const A*>(grad_values), static_cast<const T*>(images),
        static_cast<const A*>(positions), static_cast<A*>(grad_images), static_cast<A*>(grad_positions));
    check_launch("scan.sample_backward_kernel");
  });
}

void rasterize_cuda(const RasterParams& p, const void* values, const void* positions, void* image,
                    void* counts, void* infilled, int64_t* source, int32_t* nearest,
                    int32_t* envelope_v, double* envelope_z, cudaStream_t stream) {
  const int64_t hw = p.batch * p.height * p.width;
  if (hw == 0) return;
  dispatch_real_types(p.dtype, "scan.rasterize_cuda", [&](auto tag) {
    using A = decltype(tag);
    A* img = static_cast<A*>(image);
    A* cnt = static_cast<A*>(counts);
    const int64_t grid = blocks_for(hw, kThreads);
    zero_kernel<A><<<grid, kThreads, 0, stream>>>(img, hw);
    zero_kernel<A><<<grid, kThreads, 0, stream>>>(cnt, hw);
    check_launch("scan.zero_kernel");
    const int64_t n = p.batch * p.probes;
    if (n > 0) {
      deposit_kernel<A><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
          p, static_cast<const A*>(values), static_cast<const A*>(positions), img, cnt);
      check_launch("scan.deposit_kernel");
    }
    mean_kernel<A><<<grid, kThreads, 0, stream>>>(hw, img, cnt);
    check_launch("scan.mean_kernel");
    columns_kernel<A><<<blocks_for(p.batch * p.width, 64), 64, 0, stream>>>(p, cnt, nearest);
    check_launch("scan.columns_kernel");
    rows_kernel<<<blocks_for(p.batch * p.height, 64), 64, 0, stream>>>(p, nearest, envelope_v,
                                                                         envelope_z, source);
    check_launch("scan.rows_kernel");
    gather_kernel<A><<<grid, kThreads, 0, stream>>>(p, img, source, static_cast<A*>(infilled));
    check_launch("scan.gather_kernel");
  });
}

void rasterize_backward_cuda(const RasterParams& p, const void* grad_image,
                             const void* grad_infilled, const void* positions, const void* counts,
                             const int64_t* source, void* pixel_grad, void* grad_values,
                             cudaStream_t stream) {
  const int64_t hw = p.batch * p.height * p.width, n = p.batch * p.probes;
  if (n == 0) return;
  dispatch_real_types(p.dtype, "scan.rasterize_backward_cuda", [&](auto tag) {
    using A = decltype(tag);
    A* pg = static_cast<A*>(pixel_grad);
    zero_kernel<A><<<blocks_for(hw, kThreads), kThreads, 0, stream>>>(pg, hw);
    check_launch("scan.zero_kernel");
    pixel_grad_kernel<A><<<blocks_for(hw, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const A*>(grad_image), static_cast<const A*>(grad_infilled), source, pg);
    check_launch("scan.pixel_grad_kernel");
    probe_grad_kernel<A><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const A*>(positions), static_cast<const A*>(counts), pg,
        static_cast<A*>(grad_values));
    check_launch("scan.probe_grad_kernel");
  });
}

void segment_cuda(const SegmentParams& p, const void* images, const void* start,
                  const void* actions, void* positions, void* values, void* end, void* penalty,
                  cudaStream_t stream) {
  const int64_t n = p.batch * p.probes;
  if (n == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "scan.segment_cuda", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Storage<T>::acc;
    segment_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const T*>(images), static_cast<const A*>(start),
        static_cast<const A*>(actions), static_cast<A*>(positions), static_cast<A*>(values),
        static_cast<A*>(end), static_cast<A*>(penalty));
    check_launch("scan.segment_kernel");
  });
}

}  // namespace scan
}  // namespace em
