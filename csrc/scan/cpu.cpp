// Scan CPU launchers: OpenMP loops over the math in scan.h.
#include <cstring>

#include "../common/dispatch.h"
#include "launch.h"
#include "scan.h"

namespace em {
namespace scan {
namespace {

// Probes per call below which a loop stays serial: a probe costs a few ns, and waking a thread
// team costs microseconds (far more on an oversubscribed machine).
constexpr int64_t kParallelProbes = int64_t(1) << 16;
constexpr int64_t kChunk = 8192;  // probes per parallel task

// Probes [i0, i1) of image img, in blocks: first every probe's pixel offsets and weights, then
// the loads, so the loads are independent and many cache misses overlap (a probe-by-probe loop
// keeps only a few in flight along a path through a large image). Noise last, per probe.
template <class T, class A>
void sample_run(const SampleParams& p, const T* img, const A* positions, A* values, int64_t i0,
                int64_t i1) {
  using S = Storage<T>;
  constexpr int K = 128;
  const int64_t H = p.height, W = p.width;
  const bool nearest = static_cast<Mode>(p.mode) == Mode::Nearest;
  int64_t r0[K], r1[K], c0[K], c1[K];
  A wy[K], wx[K];
  for (int64_t s = i0; s < i1; s += K) {
    const int m = int(i1 - s < K ? i1 - s : K);
    const A* pos = positions + 2 * s;
    A* out = values + s;
    if (nearest) {
      for (int k = 0; k < m; ++k) r0[k] = pixel_of(pos[2 * k], H) * W + pixel_of(pos[2 * k + 1], W);
      for (int k = 0; k < m; ++k) out[k] = A(S::load(img, r0[k]));
    } else {
      for (int k = 0; k < m; ++k) {
        const Lerp<A> ly = lerp_axis(pos[2 * k], H), lx = lerp_axis(pos[2 * k + 1], W);
        r0[k] = ly.i0 * W; r1[k] = ly.i1 * W; c0[k] = lx.i0; c1[k] = lx.i1;
        wy[k] = ly.w; wx[k] = lx.w;
      }
      for (int k = 0; k < m; ++k)
        out[k] = blend(A(S::load(img, r0[k] + c0[k])), A(S::load(img, r0[k] + c1[k])),
                       A(S::load(img, r1[k] + c0[k])), A(S::load(img, r1[k] + c1[k])), wy[k], wx[k]);
    }
  }
  if (p.dose > 0.0 || p.read_noise > 0.0)
    for (int64_t i = i0; i < i1; ++i)
      values[i] = A(add_noise(double(values[i]), p.dose, p.read_noise, p.seed, uint64_t(i)));
}

template <class T>
void sample_impl(const SampleParams& p, const T* images, const void* positions_v, void* values_v) {
  using A = typename Storage<T>::acc;
  const A* positions = static_cast<const A*>(positions_v);
  A* values = static_cast<A*>(values_v);
  const int64_t n = p.batch * p.probes, hw = p.height * p.width;
  // Chunks of probes handed out dynamically: large batches and one huge image both split, and
  // a thread that is descheduled (oversubscribed machine) holds up at most one chunk.
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic, 1) if (n > kParallelProbes)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i1 = (c + 1) * kChunk < n ? (c + 1) * kChunk : n;
    for (int64_t i = c * kChunk; i < i1;) {
      const int64_t b = i / p.probes, end = (b + 1) * p.probes < i1 ? (b + 1) * p.probes : i1;
      sample_run<T, A>(p, images + b * hw, positions, values, i, end);
      i = end;
    }
  }
}

template <class T>
void sample_backward_impl(const SampleParams& p, const void* grad_values_v, const T* images,
                          const void* positions_v, void* grad_images_v, void* grad_positions_v) {
  using A = typename Storage<T>::acc;
  const A* g = static_cast<const A*>(grad_values_v);
  const A* positions = static_cast<const A*>(positions_v);
  A* grad_images = static_cast<A*>(grad_images_v);
  A* grad_positions = static_cast<A*>(grad_positions_v);
  const int64_t hw = p.height * p.width;
  // One image per task: probes of one image accumulate in order, so the result is deterministic.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < p.batch; ++b) {
    A* gi = grad_images + b * hw;
    for (int64_t k = 0; k < hw; ++k) gi[k] = A(0);
    for (int64_t j = 0; j < p.probes; ++j) {
      const int64_t i = b * p.probes + j;
      const ProbeGrad<T, A> r = sample_probe_grad<T, A>(p, images, positions, g[i], i);
      for (int k = 0; k < 4; ++k) gi[r.index[k]] += r.weight[k];
      if (grad_positions) { grad_positions[2 * i] = r.dy; grad_positions[2 * i + 1] = r.dx; }
    }
  }
}

template <class A>
void rasterize_impl(const RasterParams& p, const A* values, const A* positions, A* image, A* counts,
                    A* infilled, int64_t* source, int32_t* nearest, int32_t* env_v, double* env_z) {
  const int64_t H = p.height, W = p.width, hw = H * W;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < p.batch; ++b) {
    A* img = image + b * hw;
    A* cnt = counts + b * hw;
    for (int64_t k = 0; k < hw; ++k) { img[k] = A(0); cnt[k] = A(0); }
    for (int64_t j = 0; j < p.probes; ++j) {
      const int64_t i = b * p.probes + j, pix = probe_pixel(positions, i, H, W);
      img[pix] += values[i];
      cnt[pix] += A(1);
    }
    for (int64_t k = 0; k < hw; ++k) if (cnt[k] > A(0)) img[k] /= cnt[k];
    int32_t* nr = nearest + b * hw;
    // Pass 1 by whole rows (contiguous), every column's sweep advanced together; `last` holds
    // the per-column sweep state (the row workspace of this image is free until pass 2).
    int32_t* last = env_v + b * hw;
    for (int64_t c = 0; c < W; ++c) last[c] = -1;
    for (int64_t r = 0; r < H; ++r)
      for (int64_t c = 0; c < W; ++c) column_step_down(cnt[r * W + c], int32_t(r), &last[c], &nr[r * W + c]);
    for (int64_t c = 0; c < W; ++c) last[c] = -1;
    for (int64_t r = H - 1; r >= 0; --r)
      for (int64_t c = 0; c < W; ++c) column_step_up(cnt[r * W + c], int32_t(r), &last[c], &nr[r * W + c]);
    int64_t* src = source + b * hw;
    for (int64_t r = 0; r < H; ++r)
      nearest_in_row(nr, W, r, env_v + b * hw + r * W, env_z + b * H * (W + 1) + r * (W + 1), src);
    A* out = infilled + b * hw;
    for (int64_t k = 0; k < hw; ++k) out[k] = src[k] >= 0 ? img[src[k]] : A(0);
  }
}

template <class A>
void rasterize_backward_impl(const RasterParams& p, const A* grad_image, const A* grad_infilled,
                             const A* positions, const A* counts, const int64_t* source,
                             A* pixel_grad, A* grad_values) {
  const int64_t H = p.height, W = p.width, hw = H * W;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < p.batch; ++b) {
    A* pg = pixel_grad + b * hw;
    const A* gim = grad_image ? grad_image + b * hw : nullptr;
    for (int64_t k = 0; k < hw; ++k) pg[k] = gim ? gim[k] : A(0);
    if (grad_infilled) {
      const int64_t* src = source + b * hw;
      const A* gin = grad_infilled + b * hw;
      for (int64_t k = 0; k < hw; ++k) if (src[k] >= 0) pg[src[k]] += gin[k];
    }
    const A* cnt = counts + b * hw;
    for (int64_t j = 0; j < p.probes; ++j) {
      const int64_t i = b * p.probes + j, pix = probe_pixel(positions, i, H, W);
      grad_values[i] = pg[pix] / cnt[pix];
    }
  }
}

}  // namespace

void sample_cpu(const SampleParams& p, const void* images, const void* positions, void* values) {
  if (p.batch * p.probes == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "scan.sample_cpu", [&](auto tag) {
    using T = decltype(tag);
    sample_impl(p, static_cast<const T*>(images), positions, values);
  });
}

void sample_backward_cpu(const SampleParams& p, const void* grad_values, const void* images,
                         const void* positions, void* grad_images, void* grad_positions) {
  if (p.batch * p.height * p.width == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "scan.sample_backward_cpu", [&](auto tag) {
    using T = decltype(tag);
    sample_backward_impl(p, grad_values, static_cast<const T*>(images), positions, grad_images,
                         grad_positions);
  });
}

void rasterize_cpu(const RasterParams& p, const void* values, const void* positions, void* image,
                   void* counts, void* infilled, int64_t* source, int32_t* nearest,
                   int32_t* envelope_v, double* envelope_z) {
  if (p.batch * p.height * p.width == 0) return;
  dispatch_real_types(p.dtype, "scan.rasterize_cpu", [&](auto tag) {
    using A = decltype(tag);
    rasterize_impl(p, static_cast<const A*>(values), static_cast<const A*>(positions),
                   static_cast<A*>(image), static_cast<A*>(counts), static_cast<A*>(infilled),
                   source, nearest, envelope_v, envelope_z);
  });
}

void rasterize_backward_cpu(const RasterParams& p, const void* grad_image,
                            const void* grad_infilled, const void* positions, const void* counts,
                            const int64_t* source, void* pixel_grad, void* grad_values) {
  if (p.batch * p.probes == 0) return;
  dispatch_real_types(p.dtype, "scan.rasterize_backward_cpu", [&](auto tag) {
    using A = decltype(tag);
    rasterize_backward_impl(p, static_cast<const A*>(grad_image),
                            static_cast<const A*>(grad_infilled), static_cast<const A*>(positions),
                            static_cast<const A*>(counts), source, static_cast<A*>(pixel_grad),
                            static_cast<A*>(grad_values));
  });
}

void segment_cpu(const SegmentParams& p, const void* images, const void* start,
                 const void* actions, void* positions, void* values, void* end, void* penalty) {
  const int64_t n = p.batch * p.probes;
  if (n == 0) return;
  dispatch_float_types(static_cast<DType>(p.dtype), "scan.segment_cpu", [&](auto tag) {
    using T = decltype(tag);
    using A = typename Storage<T>::acc;
    const T* img = static_cast<const T*>(images);
    const A* st = static_cast<const A*>(start);
    const A* act = static_cast<const A*>(actions);
#pragma omp parallel for schedule(static) if (n > kParallelProbes)
    for (int64_t b = 0; b < p.batch; ++b) {
      A dy, dx;
      segment_direction(p, act, b, &dy, &dx);
      for (int64_t j = 0; j < p.probes; ++j)
        segment_probe<T, A>(p, img, st, dy, dx, static_cast<A*>(positions),
                            static_cast<A*>(values), static_cast<A*>(end),
                            static_cast<A*>(penalty), b, j);
    }
  });
}

}  // namespace scan
}  // namespace em
