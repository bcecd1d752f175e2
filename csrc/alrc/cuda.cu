// ALRC CUDA launchers: grid launches over the math in alrc.h.
#include "../common/cuda_check.h"
#include "../common/dispatch.h"
#include "alrc.h"
#include "launch.h"

namespace em {
namespace alrc {
namespace {

constexpr int kThreads = 256;

template <class V> __device__ V block_sum(V v, V* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const V r = shared[0];
  __syncthreads();
  return r;
}

// grid (chunks, B): block (c, b) sums error over elements [c*kCudaChunk, (c+1)*kCudaChunk) of example b.
template <ErrorKind K, class T>
__global__ void partial_sums_kernel(Params p, const T* __restrict__ pred,
                                    const T* __restrict__ target, double* __restrict__ partial) {
  using S = Storage<T>;
  using A = typename S::acc;
  __shared__ A shared[kThreads];
  const int64_t b = blockIdx.y, c = blockIdx.x;
  const int64_t begin = c * kCudaChunk;
  const int64_t end = (begin + kCudaChunk < p.elems) ? begin + kCudaChunk : p.elems;
  A acc = A(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t k = b * p.elems + i;
    acc += error_value<K>(A(S::load(pred, k) - S::load(target, k)));
  }
  const A total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[b * gridDim.x + c] = double(total);
}

// One block: per-example mean, clip, and the moment update over the batch.
template <class A>
__global__ void finalize_kernel(Params p, int64_t chunks, const double* __restrict__ partial,
                                const float* __restrict__ mu1, const float* __restrict__ mu2,
                                A* __restrict__ loss, A* __restrict__ scale,
                                float* __restrict__ mu1_out, float* __restrict__ mu2_out) {
  __shared__ double shared[kThreads];
  double up, down;
  thresholds(mu1[0], mu2[0], p.n_up, p.n_down, &up, &down);
  double s1 = 0.0, s2 = 0.0, count = 0.0;
  for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
    double sc;
    const double l = clip(sum / double(p.elems), up, down, &sc);
    loss[b] = A(l);
    scale[b] = A(sc);
    if (is_finite(l)) { s1 += l; s2 += l * l; count += 1.0; }
  }
  s1 = block_sum(s1, shared);
  s2 = block_sum(s2, shared);
  count = block_sum(count, shared);
  if (threadIdx.x == 0) {
    const int64_t f = int64_t(count);
    mu1_out[0] = ema(mu1[0], p.decay, f ? s1 / count : 0.0, f);
    mu2_out[0] = ema(mu2[0], p.decay, f ? s2 / count : 0.0, f);
  }
}

template <ErrorKind K, class T>
__global__ void per_pixel_kernel(Params p, const T* __restrict__ pred, const T* __restrict__ target,
                                 const float* __restrict__ mu1, const float* __restrict__ mu2,
                                 typename Storage<T>::acc* __restrict__ loss,
                                 typename Storage<T>::acc* __restrict__ scale,
                                 float* __restrict__ mu1_out, float* __restrict__ mu2_out) {
  using S = Storage<T>;
  using A = typename S::acc;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < p.elems;
       n += int64_t(gridDim.x) * blockDim.x) {
    double up, down, s1 = 0.0, s2 = 0.0;
    int64_t f = 0;
    thresholds(mu1[n], mu2[n], p.n_up, p.n_down, &up, &down);
    for (int64_t b = 0; b < p.batch; ++b) {
      const int64_t i = b * p.elems + n;
      double sc;
      const double l = clip(double(error_value<K>(A(S::load(pred, i) - S::load(target, i)))),
                            up, down, &sc);
      loss[i] = A(l);
      scale[i] = A(sc);
      if (is_finite(l)) { s1 += l; s2 += l * l; ++f; }
    }
    mu1_out[n] = ema(mu1[n], p.decay, f ? s1 / f : 0.0, f);
    mu2_out[n] = ema(mu2[n], p.decay, f ? s2 / f : 0.0, f);
  }
}

template <ErrorKind K, class T>
__global__ void backward_kernel(Params p, const typename Storage<T>::acc* __restrict__ g,
                                const T* __restrict__ pred, const T* __restrict__ target,
                                const typename Storage<T>::acc* __restrict__ scale,
                                T* __restrict__ grad_pred) {
  using S = Storage<T>;
  using A = typename S::acc;
  const int64_t total = p.batch * p.elems;
  const A inv_n = A(1) / A(p.elems);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = p.per_pixel ? i : i / p.elems;
    const A coef = p.per_pixel ? g[k] * scale[k] : g[k] * scale[k] * inv_n;
    S::store(grad_pred, i, coef * error_grad<K>(A(S::load(pred, i) - S::load(target, i))));
  }
}

}  // namespace

void forward_cuda(const Params& p, const void* pred, const void* target, const float* mu1,
                  const float* mu2, void* loss, void* scale, float* mu1_out, float* mu2_out,
                  double* workspace, cudaStream_t stream) {
  if (p.batch == 0) {
    const size_t bytes = sizeof(float) * (p.per_pixel ? p.elems : 1);
    cudaMemcpyAsync(mu1_out, mu1, bytes, cudaMemcpyDeviceToDevice, stream);
    cudaMemcpyAsync(mu2_out, mu2, bytes, cudaMemcpyDeviceToDevice, stream);
    check_launch("alrc.forward_cuda (copy moments)");
    return;
  }
  dispatch_float_types(static_cast<DType>(p.dtype), "alrc.forward_cuda", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Storage<T>::acc;
    const T* a = static_cast<const T*>(pred);
    const T* b = static_cast<const T*>(target);
    if (p.per_pixel) {
      dispatch_kind(p.kind, [&](auto k) {
        per_pixel_kernel<decltype(k)::value, T><<<blocks_for(p.elems, kThreads), kThreads, 0, stream>>>(
            p, a, b, mu1, mu2, static_cast<A*>(loss), static_cast<A*>(scale), mu1_out, mu2_out);
      });
      check_launch("alrc.per_pixel_kernel");
      return;
    }
    const int64_t chunks = (p.elems + kCudaChunk - 1) / kCudaChunk;
    dispatch_kind(p.kind, [&](auto k) {
      partial_sums_kernel<decltype(k)::value, T>
          <<<dim3(unsigned(chunks), unsigned(p.batch)), kThreads, 0, stream>>>(p, a, b, workspace);
    });
    check_launch("alrc.partial_sums_kernel");
    finalize_kernel<A><<<1, kThreads, 0, stream>>>(p, chunks, workspace, mu1, mu2,
                                                   static_cast<A*>(loss), static_cast<A*>(scale),
                                                   mu1_out, mu2_out);
    check_launch("alrc.finalize_kernel");
  });
}

void backward_cuda(const Params& p, const void* grad_loss, const void* pred, const void* target,
                   const void* scale, void* grad_pred, cudaStream_t stream) {
  if (p.batch == 0 || p.elems == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "alrc.backward_cuda", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Storage<T>::acc;
    dispatch_kind(p.kind, [&](auto k) {
      backward_kernel<decltype(k)::value, T><<<blocks_for(p.batch * p.elems, kThreads), kThreads, 0, stream>>>(
          p, static_cast<const A*>(grad_loss), static_cast<const T*>(pred),
          static_cast<const T*>(target), static_cast<const A*>(scale), static_cast<T*>(grad_pred));
    });
    check_launch("alrc.backward_kernel");
  });
}

}  // namespace alrc
}  // namespace em
