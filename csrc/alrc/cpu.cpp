// ALRC CPU launchers: OpenMP loops over the math in alrc.h.
#include <vector>

#include "../common/dispatch.h"
#include "alrc.h"
#include "launch.h"

namespace em {
namespace alrc {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel task in the per-example reduction
constexpr int kLanes = 8;          // independent partial sums, so the compiler can vectorise
// Below this many elements a parallel region costs more than it saves (thread wake-up is
// tens of microseconds, far worse on a loaded machine).
constexpr int64_t kParallelMin = int64_t(1) << 15;

// Sum of error(pred - target) over [begin, end), accumulated in lanes then in double.
template <ErrorKind K, class T>
EM_CPU_CLONES double chunk_error_sum(const T* pred, const T* target, int64_t begin, int64_t end) {
  using S = Storage<T>;
  using A = typename S::acc;
  A lane[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes)
    for (int l = 0; l < kLanes; ++l)
      lane[l] += error_value<K>(A(S::load(pred, i + l) - S::load(target, i + l)));
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += double(lane[l]);
  for (; i < end; ++i) total += double(error_value<K>(A(S::load(pred, i) - S::load(target, i))));
  return total;
}

template <ErrorKind K, class T>
void forward_per_example(const Params& p, const T* pred, const T* target, const float* mu1,
                         const float* mu2, void* loss_v, void* scale_v, float* mu1_out,
                         float* mu2_out) {
  using A = typename Storage<T>::acc;
  const int64_t chunks = (p.elems + kChunk - 1) / kChunk;
  std::vector<double> partial(p.batch * chunks);
  // Fixed chunking and an ordered final sum keep the result independent of thread count.
#pragma omp parallel for schedule(static) if (p.batch * p.elems >= kParallelMin)
  for (int64_t t = 0; t < p.batch * chunks; ++t) {
    const int64_t b = t / chunks, c = t % chunks;
    const int64_t begin = c * kChunk, end = (begin + kChunk < p.elems) ? begin + kChunk : p.elems;
    partial[t] = chunk_error_sum<K>(pred + b * p.elems, target + b * p.elems, begin, end);
  }
  double up, down;
  thresholds(mu1[0], mu2[0], p.n_up, p.n_down, &up, &down);
  A* loss = static_cast<A*>(loss_v);
  A* scale = static_cast<A*>(scale_v);
  double s1 = 0.0, s2 = 0.0;
  int64_t finite = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[b * chunks + c];
    double sc;
    const double l = clip(sum / double(p.elems), up, down, &sc);
    loss[b] = A(l);
    scale[b] = A(sc);
    if (is_finite(l)) { s1 += l; s2 += l * l; ++finite; }
  }
  mu1_out[0] = ema(mu1[0], p.decay, finite ? s1 / finite : 0.0, finite);
  mu2_out[0] = ema(mu2[0], p.decay, finite ? s2 / finite : 0.0, finite);
}

template <ErrorKind K, class T>
void forward_per_pixel(const Params& p, const T* pred, const T* target, const float* mu1,
                       const float* mu2, void* loss_v, void* scale_v, float* mu1_out,
                       float* mu2_out) {
  using S = Storage<T>;
  using A = typename S::acc;
  A* loss = static_cast<A*>(loss_v);
  A* scale = static_cast<A*>(scale_v);
  constexpr int64_t kBlock = 1024;
  const int64_t blocks = (p.elems + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (p.batch * p.elems >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t n0 = blk * kBlock, n1 = (n0 + kBlock < p.elems) ? n0 + kBlock : p.elems;
    double up[kBlock], down[kBlock], s1[kBlock] = {}, s2[kBlock] = {};
    int64_t finite[kBlock] = {};
    for (int64_t n = n0; n < n1; ++n) thresholds(mu1[n], mu2[n], p.n_up, p.n_down, &up[n - n0], &down[n - n0]);
    for (int64_t b = 0; b < p.batch; ++b) {  // batch outer, pixels inner: rows stay contiguous
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t i = b * p.elems + n, j = n - n0;
        double sc;
        const double l = clip(double(error_value<K>(A(S::load(pred, i) - S::load(target, i)))),
                              up[j], down[j], &sc);
        loss[i] = A(l);
        scale[i] = A(sc);
        if (is_finite(l)) { s1[j] += l; s2[j] += l * l; ++finite[j]; }
      }
    }
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t j = n - n0, f = finite[j];
      mu1_out[n] = ema(mu1[n], p.decay, f ? s1[j] / f : 0.0, f);
      mu2_out[n] = ema(mu2[n], p.decay, f ? s2[j] / f : 0.0, f);
    }
  }
}

// grad_pred[i] = coef * error'(pred[i] - target[i]) over [begin, end).
template <ErrorKind K, class T>
EM_CPU_CLONES void scaled_error_grad(typename Storage<T>::acc coef, const T* pred, const T* target,
                                     T* grad_pred, int64_t begin, int64_t end) {
  using S = Storage<T>;
  using A = typename S::acc;
  for (int64_t i = begin; i < end; ++i)
    S::store(grad_pred, i, coef * error_grad<K>(A(S::load(pred, i) - S::load(target, i))));
}

template <ErrorKind K, class T>
void backward_impl(const Params& p, const void* grad_loss_v, const T* pred, const T* target,
                   const void* scale_v, T* grad_pred) {
  using S = Storage<T>;
  using A = typename S::acc;
  const A* g = static_cast<const A*>(grad_loss_v);
  const A* scale = static_cast<const A*>(scale_v);
  if (p.per_pixel) {
    const int64_t total = p.batch * p.elems;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
    for (int64_t i = 0; i < total; ++i)
      S::store(grad_pred, i, g[i] * scale[i] * error_grad<K>(A(S::load(pred, i) - S::load(target, i))));
    return;
  }
  // Per example: d(mean error)/d(pred) times the upstream gradient and the clip factor,
  // constant over each example's contiguous chunk so the inner loop vectorises.
  const int64_t chunks = (p.elems + kChunk - 1) / kChunk;
  const A inv_n = A(1) / A(p.elems);
#pragma omp parallel for schedule(static) if (p.batch * p.elems >= kParallelMin)
  for (int64_t t = 0; t < p.batch * chunks; ++t) {
    const int64_t b = t / chunks, begin = b * p.elems + (t % chunks) * kChunk;
    const int64_t end = begin + kChunk < (b + 1) * p.elems ? begin + kChunk : (b + 1) * p.elems;
    scaled_error_grad<K>(g[b] * scale[b] * inv_n, pred, target, grad_pred, begin, end);
  }
}

}  // namespace

void forward_cpu(const Params& p, const void* pred, const void* target, const float* mu1,
                 const float* mu2, void* loss, void* scale, float* mu1_out, float* mu2_out) {
  if (p.batch == 0) {  // nothing observed: moments unchanged
    const int64_t m = p.per_pixel ? p.elems : 1;
    for (int64_t i = 0; i < m; ++i) { mu1_out[i] = mu1[i]; mu2_out[i] = mu2[i]; }
    return;
  }
  dispatch_float_types(static_cast<DType>(p.dtype), "alrc.forward_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(pred);
    const T* b = static_cast<const T*>(target);
    dispatch_kind(p.kind, [&](auto k) {
      if (p.per_pixel)
        forward_per_pixel<decltype(k)::value>(p, a, b, mu1, mu2, loss, scale, mu1_out, mu2_out);
      else
        forward_per_example<decltype(k)::value>(p, a, b, mu1, mu2, loss, scale, mu1_out, mu2_out);
    });
  });
}

void backward_cpu(const Params& p, const void* grad_loss, const void* pred, const void* target,
                  const void* scale, void* grad_pred) {
  if (p.batch == 0 || p.elems == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "alrc.backward_cpu", [&](auto tag) {
    using T = decltype(tag);
    dispatch_kind(p.kind, [&](auto k) {
      backward_impl<decltype(k)::value>(p, grad_loss, static_cast<const T*>(pred),
                             static_cast<const T*>(target), scale, static_cast<T*>(grad_pred));
    });
  });
}

int64_t workspace_doubles(const Params& p) {
  return p.per_pixel ? 0 : p.batch * ((p.elems + kCudaChunk - 1) / kCudaChunk);
}

}  // namespace alrc
}  // namespace em
