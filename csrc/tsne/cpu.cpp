// t-SNE CPU launchers: OpenMP loops over the math in tsne.h.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/dispatch.h"
#include "launch.h"
#include "pool.h"
#include "tsne.h"

// The O(n^2) repulsion is the one loop that pays for wider vectors than the baseline x86-64
// build allows; GCC emits an AVX2 clone next to it and picks one at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define EM_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EM_SIMD_CLONES
#endif

namespace em {
namespace tsne {
namespace {

constexpr int64_t kTile = 1024;  // j-tile of the exact repulsion: float partial sums, then double

// Repulsion on rows [i0, i1) from all n points held as separate x and y arrays.
template <class A>
inline __attribute__((always_inline)) void repulsive_rows(const A* __restrict__ xs,
                                                          const A* __restrict__ ys, int64_t n,
                                                          int64_t i0, int64_t i1, A* force,
                                                          double* zrow) {
  for (int64_t i = i0; i < i1; ++i) {
    const A xi = xs[i], yi = ys[i];
    double fx = 0.0, fy = 0.0, z = 0.0;
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int64_t j1 = std::min(n, j0 + kTile);
      A rx = A(0), ry = A(0), zz = A(0);
#pragma omp simd reduction(+ : rx, ry, zz)
      for (int64_t j = j0; j < j1; ++j) repulsive_pair(xi, yi, xs[j], ys[j], rx, ry, zz);
      fx += double(rx);
      fy += double(ry);
      z += double(zz);
    }
    force[2 * i] = A(fx);
    force[2 * i + 1] = A(fy);
    zrow[i] = z - 1.0;  // the j = i term contributed w_ii = 1 and no force
  }
}

EM_SIMD_CLONES void repulsive_rows_f32(const float* xs, const float* ys, int64_t n, int64_t i0,
                                       int64_t i1, float* force, double* zrow) {
  repulsive_rows<float>(xs, ys, n, i0, i1, force, zrow);
}
EM_SIMD_CLONES void repulsive_rows_f64(const double* xs, const double* ys, int64_t n, int64_t i0,
                                       int64_t i1, double* force, double* zrow) {
  repulsive_rows<double>(xs, ys, n, i0, i1, force, zrow);
}
inline void repulsive_rows_any(const float* xs, const float* ys, int64_t n, int64_t i0,
                               int64_t i1, float* f, double* z) {
  repulsive_rows_f32(xs, ys, n, i0, i1, f, z);
}
inline void repulsive_rows_any(const double* xs, const double* ys, int64_t n, int64_t i0,
                               int64_t i1, double* f, double* z) {
  repulsive_rows_f64(xs, ys, n, i0, i1, f, z);
}

// Attractive forces of rows [b, e): one vector lane per CSR entry (the y_j loads become gathers),
// the per-pair math of tsne.h. Force only; the KL term is taken by attractive_row.
template <class T, class I>
inline __attribute__((always_inline)) void attractive_rows(const T* __restrict__ y,
                                                           const int64_t* __restrict__ indptr,
                                                           const I* __restrict__ indices,
                                                           const T* __restrict__ values, int64_t b,
                                                           int64_t e, T* __restrict__ force) {
  for (int64_t i = b; i < e; ++i) {
    const T xi = y[2 * i], yi = y[2 * i + 1];
    T ax = T(0), ay = T(0);
#pragma omp simd reduction(+ : ax, ay)
    for (int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
      const int64_t j = int64_t(indices[k]);
      attractive_pair(xi, yi, y[2 * j], y[2 * j + 1], values[k], ax, ay);
    }
    force[2 * i] = ax;
    force[2 * i + 1] = ay;
  }
}

#define EM_ATTRACTIVE_CLONE(T, I)                                                               \
  EM_SIMD_CLONES void attractive_rows_simd(const T* y, const int64_t* indptr, const I* indices, \
                                           const T* values, int64_t b, int64_t e, T* force) {   \
    attractive_rows<T, I>(y, indptr, indices, values, b, e, force);                             \
  }
EM_ATTRACTIVE_CLONE(float, int32_t)
EM_ATTRACTIVE_CLONE(float, int64_t)
EM_ATTRACTIVE_CLONE(double, int32_t)
EM_ATTRACTIVE_CLONE(double, int64_t)
#undef EM_ATTRACTIVE_CLONE

// Calls f(I{}) with I the CSR column index type (int32 or int64).
template <class F> void dispatch_index_bits(int bits, const char* where, F&& f) {
  if (bits == 32) { f(int32_t{}); return; }
  if (bits == 64) { f(int64_t{}); return; }
  throw std::invalid_argument(std::string(where) + ": index_bits must be 32 or 64, got " +
                              std::to_string(bits));
}

// Coordinates relative to the grid centre keep the |y|^2 charge small, so the Z combination in
// combine_potentials cancels less in float32.
template <class A> struct GridFrame {
  A lx, ly, h, cx, cy;
  int nb, p;
  int64_t m;
  explicit GridFrame(const InterpParams& q)
      : lx(A(q.lower_x)), ly(A(q.lower_y)), h(A(q.box_width)),
        cx(A(q.lower_x + 0.5 * q.n_boxes * q.box_width)),
        cy(A(q.lower_y + 0.5 * q.n_boxes * q.box_width)), nb(q.n_boxes), p(q.p),
        m(int64_t(q.n_boxes) * q.p) {}
};

// Calls f(std::integral_constant<int, P>) with P = p for the node counts worth unrolling (3, 4),
// else P = 0 (p read at run time).
template <class F> void dispatch_nodes(int p, F&& f) {
  switch (p) {
    case 3: f(std::integral_constant<int, 3>{}); return;
    case 4: f(std::integral_constant<int, 4>{}); return;
    default: f(std::integral_constant<int, 0>{}); return;
  }
}

}  // namespace

void perplexity_cpu(const PerplexityParams& q, const void* d2, void* p, double* beta) {
  if (q.n == 0) return;
  const double log_perp = log(q.perplexity);
  dispatch_real_types(q.dtype, "tsne.perplexity_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* d = static_cast<const T*>(d2);
    T* out = static_cast<T*>(p);
    parallel_for(q.n, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        beta[i] = calibrate_row(d + i * q.k, int(q.k), log_perp, q.tol, q.max_iter, out + i * q.k);
    });
  });
}

void neighbor_d2_cpu(const NeighborParams& q, const void* x, const int64_t* idx, void* d2) {
  if (q.n == 0 || q.k == 0) return;
  dispatch_real_types(q.dtype, "tsne.neighbor_d2_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* xx = static_cast<const T*>(x);
    T* out = static_cast<T*>(d2);
    parallel_for(q.n, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        for (int64_t j = 0; j < q.k; ++j)
          out[i * q.k + j] = T(squared_distance(xx + i * q.d, xx + idx[i * q.k + j] * q.d, q.d));
    });
  });
}

void attractive_cpu(const AttractiveParams& q, const void* y, const int64_t* indptr,
                    const void* indices, const void* values, void* force, double* plogw) {
  if (q.n == 0) return;
  dispatch_real_types(q.dtype, "tsne.attractive_cpu", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index_bits(q.index_bits, "tsne.attractive_cpu", [&](auto itag) {
      using I = decltype(itag);
      const T* yy = static_cast<const T*>(y);
      const I* ix = static_cast<const I*>(indices);
      const T* v = static_cast<const T*>(values);
      T* f = static_cast<T*>(force);
      parallel_for(q.n, 1024, [&](int64_t b, int64_t e) {
        attractive_rows_simd(yy, indptr, ix, v, b, e, f);
        if (!q.want_kl) return;
        for (int64_t i = b; i < e; ++i) {
          T fx, fy;
          attractive_row<T, I, T>(yy, ix, v, i, indptr[i], indptr[i + 1], true, &fx, &fy,
                                  plogw + i);
        }
      });
    });
  });
}

void repulsive_exact_cpu(const RepulsiveParams& q, const void* y, void* force, double* zrow) {
  if (q.n == 0) return;
  dispatch_real_types(q.dtype, "tsne.repulsive_exact_cpu", [&](auto tag) {
    using T = decltype(tag);
    const T* yy = static_cast<const T*>(y);
    std::vector<T> xs(q.n), ys(q.n);  // structure of arrays for unit-stride vector loads
    for (int64_t i = 0; i < q.n; ++i) { xs[i] = yy[2 * i]; ys[i] = yy[2 * i + 1]; }
    T* f = static_cast<T*>(force);
    parallel_for(q.n, 64, [&](int64_t b, int64_t e) {
      repulsive_rows_any(xs.data(), ys.data(), q.n, b, e, f, zrow);
    });
  });
}

void interp_spread_cpu(const InterpParams& q, const void* y, void* grid, int64_t* order,
                       int64_t* box_start) {
  require(q.p >= 1 && q.p <= kMaxInterp, "tsne.interp_spread_cpu: p must be in [1, 8], got " +
                                             std::to_string(q.p));
  dispatch_real_types(q.dtype, "tsne.interp_spread_cpu", [&](auto tag) {
    using T = decltype(tag);
    const GridFrame<T> g(q);
    const T* yy = static_cast<const T*>(y);
    T* out = static_cast<T*>(grid);
    const int64_t cells = g.m * g.m;
    std::memset(out, 0, sizeof(T) * kCharges * cells);
    if (q.n == 0) return;
    // Bucket the points by box row (counting sort): a box row owns grid rows [by*p, by*p + p),
    // so box rows can be spread in parallel without races, in a fixed order.
    std::vector<int64_t> row(q.n);
    std::fill(box_start, box_start + g.nb + 1, 0);
    for (int64_t i = 0; i < q.n; ++i) {
      T u;
      row[i] = box_of(yy[2 * i + 1], g.ly, g.h, g.nb, &u);
      ++box_start[row[i] + 1];
    }
    for (int b = 0; b < g.nb; ++b) box_start[b + 1] += box_start[b];
    {
      std::vector<int64_t> fill(box_start, box_start + g.nb);
      for (int64_t i = 0; i < q.n; ++i) order[fill[row[i]]++] = i;
    }
    dispatch_nodes(g.p, [&](auto nodes) {
      constexpr int P = decltype(nodes)::value;
      parallel_for(g.nb, 1, [&](int64_t b, int64_t) {
        for (int64_t s = box_start[b]; s < box_start[b + 1]; ++s) {
          const int64_t i = order[s];
          spread_point<P>(i, g, yy, [out](int64_t k, T w) { out[k] += w; });
        }
      });
    });
  });
}

void interp_gather_cpu(const InterpParams& q, const void* y, const void* potentials, void* force,
                       double* zrow) {
  if (q.n == 0) return;
  require(q.p >= 1 && q.p <= kMaxInterp, "tsne.interp_gather_cpu: p must be in [1, 8], got " +
                                             std::to_string(q.p));
  dispatch_real_types(q.dtype, "tsne.interp_gather_cpu", [&](auto tag) {
    using T = decltype(tag);
    const GridFrame<T> g(q);
    const T* yy = static_cast<const T*>(y);
    const T* pot = static_cast<const T*>(potentials);
    T* f = static_cast<T*>(force);
    dispatch_nodes(g.p, [&](auto nodes) {
      constexpr int P = decltype(nodes)::value;
      parallel_for(q.n, 2048, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) gather_point<P>(i, g, yy, pot, f, zrow);
      });
    });
  });
}

void step_cpu(const StepParams& q, void* y, void* update, void* gains, const void* attr,
              const void* rep, double* bbox) {
  if (q.n == 0) return;
  dispatch_real_types(q.dtype, "tsne.step_cpu", [&](auto tag) {
    using T = decltype(tag);
    T* yy = static_cast<T*>(y);
    T* u = static_cast<T*>(update);
    T* gn = static_cast<T*>(gains);
    const T* a = static_cast<const T*>(attr);
    const T* r = static_cast<const T*>(rep);
    // Fixed chunks with ordered partial sums: the mean does not depend on the thread count.
    constexpr int64_t kChunk = 8192;
    const int64_t chunks = (q.n + kChunk - 1) / kChunk;
    std::vector<double> part(2 * chunks), lo(2 * chunks), hi(2 * chunks);
    parallel_for(q.n, kChunk, [&](int64_t b, int64_t e) {
      double sx = 0.0, sy = 0.0;
      for (int64_t i = b; i < e; ++i) {
        step_point(yy + 2 * i, u + 2 * i, gn + 2 * i, a + 2 * i, r + 2 * i, T(q.alpha),
                   T(q.inv_z), T(q.momentum), T(q.lr), T(q.min_gain), T(q.max_step));
        sx += double(yy[2 * i]);
        sy += double(yy[2 * i + 1]);
      }
      part[2 * (b / kChunk)] = sx;
      part[2 * (b / kChunk) + 1] = sy;
    });
    double mx = 0.0, my = 0.0;
    for (int64_t c = 0; c < chunks; ++c) { mx += part[2 * c]; my += part[2 * c + 1]; }
    const T cx = T(mx / double(q.n)), cy = T(my / double(q.n));
    parallel_for(q.n, kChunk, [&](int64_t b, int64_t e) {
      double l0 = INFINITY, l1 = INFINITY, h0 = -INFINITY, h1 = -INFINITY;
      for (int64_t i = b; i < e; ++i) {
        yy[2 * i] -= cx;
        yy[2 * i + 1] -= cy;
        const double v0 = double(yy[2 * i]), v1 = double(yy[2 * i + 1]);
        l0 = v0 < l0 ? v0 : l0; h0 = v0 > h0 ? v0 : h0;
        l1 = v1 < l1 ? v1 : l1; h1 = v1 > h1 ? v1 : h1;
      }
      const int64_t c = b / kChunk;
      lo[2 * c] = l0; lo[2 * c + 1] = l1; hi[2 * c] = h0; hi[2 * c + 1] = h1;
    });
    bbox[0] = bbox[1] = INFINITY;
    bbox[2] = bbox[3] = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c) {
      bbox[0] = std::min(bbox[0], lo[2 * c]); bbox[1] = std::min(bbox[1], lo[2 * c + 1]);
      bbox[2] = std::max(bbox[2], hi[2 * c]); bbox[3] = std::max(bbox[3], hi[2 * c + 1]);
    }
  });
}

int64_t step_workspace_doubles(int64_t) { return 4 * 1024 + 2; }  // cuda.cu: kStepBlocks

}  // namespace tsne
}  // namespace em
