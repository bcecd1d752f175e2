// Scan-path sampling and rasterisation math, shared by cpu.cpp and cuda.cu (thesis ch. 4-5).
//
// Coordinates: a position is (row, col) in pixels, continuous. Pixel (i, j) is the unit square
// [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5). "Nearest" sampling reads the pixel
// containing the position, floor(pos), clamped to the image: off-image probes read the nearest
// edge pixel, as the thesis's environment does (it clips to [0, side-1] and truncates).
// "Bilinear" interpolates between pixel centres with edge replication (the same clamp).
#pragma once
#include "../common/em_common.h"
#include "launch.h"

namespace em {
namespace scan {

// Mirrored by em_accel/ops/scan.py::SampleMode (checked at import).
enum class Mode : int { Nearest = 0, Bilinear = 1 };

EM_HD int64_t clamp_index(int64_t i, int64_t n) {
  return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// floor(x) for |x| well inside the int64 range, without a libm call (truncation, corrected
// for negative non-integers).
template <class A> EM_HD int64_t floor_int(A x) {
  const int64_t t = int64_t(x);
  return A(t) > x ? t - 1 : t;
}

// Pixel containing coordinate x along an axis of n pixels, clamped to [0, n-1].
// NaN maps to pixel 0 (the comparison below is false for NaN).
template <class A> EM_HD int64_t pixel_of(A x, int64_t n) {
  // Branch-free (selects), so CPU loops over probes vectorise; x >= 0, so truncation is floor.
  const A c = x >= A(0) ? (x < A(n) ? x : A(n - 1)) : A(0);
  return int64_t(int32_t(c));  // n < 2^31 (checked by the op)
}

// Bilinear weights along one axis: the value is (1-w)*v[i0] + w*v[i1], with the two
// neighbouring pixel centres of x clamped to the image.
template <class A> struct Lerp {
  int64_t i0, i1;
  A w;
  bool inside;  // both neighbours distinct, so d(value)/dx is (v[i1]-v[i0])
};

template <class A> EM_HD Lerp<A> lerp_axis(A x, int64_t n) {
  A u = x - A(0.5);
  if (!(u >= A(-1))) u = A(-1);  // also NaN: far before the first centre
  if (u > A(n)) u = A(n);
  const int64_t j = floor_int(u);
  Lerp<A> l;
  l.w = u - A(j);
  l.i0 = clamp_index(j, n);
  l.i1 = clamp_index(j + 1, n);
  l.inside = l.i0 != l.i1;
  if (!l.inside) l.w = A(0);  // both neighbours are one edge pixel
  return l;
}

// Value of image img [H, W] (storage T) at (y, x) in mode m, in the accumulation type A.
// Bilinear blend of the four neighbours v[row][col] with weights wy (rows) and wx (cols).
template <class A> EM_HD A blend(A v00, A v01, A v10, A v11, A wy, A wx) {
  const A top = v00 + wx * (v01 - v00), bottom = v10 + wx * (v11 - v10);
  return top + wy * (bottom - top);
}

template <class T, class A> EM_HD A sample_at(const T* img, int64_t H, int64_t W, A y, A x, Mode m) {
  using S = Storage<T>;
  if (m == Mode::Nearest) return A(S::load(img, pixel_of(y, H) * W + pixel_of(x, W)));
  const Lerp<A> ly = lerp_axis(y, H), lx = lerp_axis(x, W);
  return blend(A(S::load(img, ly.i0 * W + lx.i0)), A(S::load(img, ly.i0 * W + lx.i1)),
               A(S::load(img, ly.i1 * W + lx.i0)), A(S::load(img, ly.i1 * W + lx.i1)), ly.w, lx.w);
}

// ---------------------------------------------------------------------------------------------
// Counter-based random numbers: a splitmix64 hash of (seed, probe index, draw counter), so each
// probe's noise depends only on those three integers, on CPU and GPU alike.

EM_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

EM_HD uint64_t hash3(uint64_t seed, uint64_t index, uint64_t counter) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
  h = mix64(h ^ (index * 0xd1b54a32d192ed03ull + 0x632be59bd9b4e019ull));
  return mix64(h ^ (counter * 0x8cb92ba72f3d8dd7ull + 0x9e3779b97f4a7c15ull));
}

// Uniform in (0, 1) with 53 random bits.
EM_HD double uniform(uint64_t seed, uint64_t index, uint64_t counter) {
  return (double(hash3(seed, index, counter) >> 11) + 0.5) * 1.1102230246251565e-16;
}

// Standard normal by Box-Muller from draws (counter, counter + 1).
EM_HD double normal(uint64_t seed, uint64_t index, uint64_t counter) {
  const double u1 = uniform(seed, index, counter), u2 = uniform(seed, index, counter + 1);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Poisson(lam) sample. lam < 10: inversion by sequential search (exact); otherwise the
// transformed rejection method PTRS (W. Hoermann, Insurance: Math. Econ. 12, 39 (1993)),
// exact, with a normal approximation after 64 rejections (probability < 1e-30).
EM_HD double poisson(double lam, uint64_t seed, uint64_t index, uint64_t counter) {
  if (!(lam > 0.0)) return 0.0;
  if (lam < 10.0) {
    const double u = uniform(seed, index, counter);
    double k = 0.0, p = exp(-lam), cdf = p;
    while (u > cdf && k < 1000.0) {
      k += 1.0;
      p *= lam / k;
      cdf += p;
    }
    return k;
  }
  const double slam = sqrt(lam), loglam = log(lam);
  const double b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b;
  const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2.0);
  for (int it = 0; it < 64; ++it) {
    const double U = uniform(seed, index, counter + 2 * it) - 0.5;
    const double V = uniform(seed, index, counter + 2 * it + 1);
    const double us = 0.5 - fabs(U);
    const double k = floor((2.0 * a / us + b) * U + lam + 0.43);
    if (us >= 0.07 && V <= vr) return k;
    if (k < 0.0 || (us < 0.013 && V > us)) continue;
    if (log(V) + log(inv_alpha) - log(a / (us * us) + b) <= -lam + k * loglam - lgamma(k + 1.0))
      return k;
  }
  const double k = floor(lam + slam * normal(seed, index, counter + 128) + 0.5);
  return k < 0.0 ? 0.0 : k;
}

// Detector model applied to a clean value v of probe `index`:
//   dose > 0:       v <- Poisson(dose * max(v, 0)) / dose   (dose: counts per unit intensity)
//   read_noise > 0: v <- v + read_noise * N(0, 1)
// Draw counters: the Poisson sample uses [0, 256), the Gaussian [256, 258).
EM_HD double add_noise(double v, double dose, double read_noise, uint64_t seed, uint64_t index) {
  if (dose > 0.0) v = poisson(dose * (v > 0.0 ? v : 0.0), seed, index, 0) / dose;
  if (read_noise > 0.0) v += read_noise * normal(seed, index, 256);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Nearest-neighbour infill: an exact Euclidean distance transform with indices
// (P. Felzenszwalb & D. Huttenlocher, Theory of Computing 8, 415 (2012)), two separable passes.
// Ties go to the smallest column, then the smallest row.

// Pass 1: nearest[r*W + c] = the known row nearest to r in column c (ties: the upper row), or
// -1 when the column has no known pixel. Two sweeps per column, written as per-pixel steps so
// the GPU can run one column per thread and the CPU can sweep whole rows (contiguous memory).
// `last` is the sweep's state for the column: the last known row seen, -1 before any.
template <class A> EM_HD void column_step_down(A count, int32_t r, int32_t* last, int32_t* nearest) {
  if (count > A(0)) *last = r;
  *nearest = *last;
}

template <class A> EM_HD void column_step_up(A count, int32_t r, int32_t* last, int32_t* nearest) {
  if (count > A(0)) *last = r;
  const int32_t up = *nearest;
  if (*last >= 0 && (up < 0 || *last - r < r - up)) *nearest = *last;
}

template <class A>
EM_HD void nearest_in_column(const A* counts, int64_t H, int64_t W, int64_t c, int32_t* nearest) {
  int32_t last = -1;
  for (int64_t r = 0; r < H; ++r) column_step_down(counts[r * W + c], int32_t(r), &last, &nearest[r * W + c]);
  last = -1;
  for (int64_t r = H - 1; r >= 0; --r) column_step_up(counts[r * W + c], int32_t(r), &last, &nearest[r * W + c]);
}

// Pass 2, one row r: source[r*W + x] = flat index of the known pixel nearest to (r, x), or -1.
// Workspace: v [W] int32 and z [W + 1] double, private to this row.
EM_HD void nearest_in_row(const int32_t* nearest, int64_t W, int64_t r, int32_t* v, double* z,
                          int64_t* source) {
  const int32_t* nr = nearest + r * W;
  int64_t k = -1;
  for (int64_t q = 0; q < W; ++q) {
    if (nr[q] < 0) continue;
    const int64_t dq = r - nr[q], fq = dq * dq + q * q;
    if (k < 0) {
      k = 0; v[0] = int32_t(q); z[0] = -INFINITY; z[1] = INFINITY;
      continue;
    }
    double s;
    while (true) {
      const int64_t p = v[k], dp = r - nr[p];
      s = double(fq - (dp * dp + p * p)) / double(2 * (q - p));
      if (k > 0 && s <= z[k]) { --k; continue; }
      break;
    }
    ++k; v[k] = int32_t(q); z[k] = s; z[k + 1] = INFINITY;
  }
  if (k < 0) {
    for (int64_t x = 0; x < W; ++x) source[r * W + x] = -1;
    return;
  }
  k = 0;
  for (int64_t x = 0; x < W; ++x) {
    while (z[k + 1] < double(x)) ++k;
    source[r * W + x] = int64_t(nr[v[k]]) * W + v[k];
  }
}

// ---------------------------------------------------------------------------------------------
// One probe of em_accel::scan_sample: i = b*P + probe, img = image b [H, W], positions
// [B, P, 2] in the acc type A.

template <class T, class A>
EM_HD A sample_probe(const SampleParams& p, const T* img, const A* positions, int64_t i) {
  A v = sample_at<T, A>(img, p.height, p.width, positions[2 * i], positions[2 * i + 1],
                        static_cast<Mode>(p.mode));
  if (p.dose > 0.0 || p.read_noise > 0.0)
    v = A(add_noise(double(v), p.dose, p.read_noise, p.seed, uint64_t(i)));
  return v;
}

// Gradient of one probe: the image gradient is g * weight[k] at flat pixel index[k] (k < 4,
// within image b), and the position gradient is (dy, dx). Noise is treated as additive and
// independent of the image (straight-through), so it does not enter the gradient.
template <class T, class A> struct ProbeGrad {
  int64_t index[4];
  A weight[4];
  A dy, dx;
};

template <class T, class A>
EM_HD ProbeGrad<T, A> sample_probe_grad(const SampleParams& p, const T* images, const A* positions,
                                        A g, int64_t i) {
  using S = Storage<T>;
  const int64_t b = i / p.probes, H = p.height, W = p.width;
  const A y = positions[2 * i], x = positions[2 * i + 1];
  ProbeGrad<T, A> r;
  r.dy = A(0);
  r.dx = A(0);
  if (static_cast<Mode>(p.mode) == Mode::Nearest) {
    r.index[0] = pixel_of(y, H) * W + pixel_of(x, W);
    r.weight[0] = g;
    for (int k = 1; k < 4; ++k) { r.index[k] = r.index[0]; r.weight[k] = A(0); }
    return r;
  }
  const Lerp<A> ly = lerp_axis(y, H), lx = lerp_axis(x, W);
  r.index[0] = ly.i0 * W + lx.i0; r.weight[0] = g * (A(1) - ly.w) * (A(1) - lx.w);
  r.index[1] = ly.i0 * W + lx.i1; r.weight[1] = g * (A(1) - ly.w) * lx.w;
  r.index[2] = ly.i1 * W + lx.i0; r.weight[2] = g * ly.w * (A(1) - lx.w);
  r.index[3] = ly.i1 * W + lx.i1; r.weight[3] = g * ly.w * lx.w;
  const T* img = images + b * H * W;
  const A v00 = A(S::load(img, r.index[0])), v01 = A(S::load(img, r.index[1]));
  const A v10 = A(S::load(img, r.index[2])), v11 = A(S::load(img, r.index[3]));
  if (ly.inside) r.dy = g * ((v10 - v00) + lx.w * ((v11 - v10) - (v01 - v00)));
  if (lx.inside) r.dx = g * ((A(1) - ly.w) * (v01 - v00) + ly.w * (v11 - v10));
  return r;
}

// Flat pixel index (within its image) that probe i of [B, P, 2] positions lands in.
template <class A>
EM_HD int64_t probe_pixel(const A* positions, int64_t i, int64_t H, int64_t W) {
  return pixel_of(positions[2 * i], H) * W + pixel_of(positions[2 * i + 1], W);
}

// Per-probe step (dy, dx) of batch element b in the adaptive-scan environment (SegmentParams).
template <class A>
EM_HD void segment_direction(const SegmentParams& p, const A* actions, int64_t b, A* dy, A* dx) {
  if (p.vector_actions) {
    *dy = actions[2 * b];
    *dx = actions[2 * b + 1];
  } else {
    *dy = A(p.step) * A(cos(double(actions[b])));
    *dx = A(p.step) * A(sin(double(actions[b])));
  }
}

// Probe j of batch element b for one environment step: writes the probe's position and value
// into the episode buffers; probe 0 also writes the next start and the edge penalty.
template <class T, class A>
EM_HD void segment_probe(const SegmentParams& p, const T* images, const A* start, A dy, A dx,
                         A* positions, A* values, A* end, A* penalty, int64_t b, int64_t j) {
  const A y = start[2 * b] + A(j) * dy, x = start[2 * b + 1] + A(j) * dx;
  const int64_t k = b * p.episode_probes + p.offset + j;
  positions[2 * k] = y;
  positions[2 * k + 1] = x;
  const T* img = images + b * p.height * p.width;
  A v = sample_at<T, A>(img, p.height, p.width, y, x, static_cast<Mode>(p.mode));
  if (p.dose > 0.0 || p.read_noise > 0.0)
    v = A(add_noise(double(v), p.dose, p.read_noise, p.seed, uint64_t(k)));
  values[k] = v;
  if (j == 0) {
    const A ey = start[2 * b] + A(p.probes) * dy, ex = start[2 * b + 1] + A(p.probes) * dx;
    end[2 * b] = ey;
    end[2 * b + 1] = ex;
    const bool out = !(ey >= A(0) && ey <= A(p.height) && ex >= A(0) && ex <= A(p.width));
    penalty[b] = out ? A(p.edge_penalty) : A(0);
  }
}

}  // namespace scan
}  // namespace em
