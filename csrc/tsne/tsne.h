// t-SNE per-point math, shared by cpu.cpp and cuda.cu.
// Objective and gradient (openTSNE/FIt-SNE convention, without the factor 4):
//   w_ij = 1 / (1 + |y_i - y_j|^2),  Z = sum_{k != l} w_kl,
//   dC/dy_i = alpha * sum_j p_ij w_ij (y_i - y_j)  -  (1/Z) * sum_j w_ij^2 (y_i - y_j).
// Derivation of the interpolation (FIt-SNE, Linderman et al. 2019): docs/tsne.md.
#pragma once
#include "../common/em_common.h"

namespace em {
namespace tsne {

// Entropy-matching bisection for one row (van der Maaten 2008, as in bhtsne/sklearn):
// find beta with H(p) = ln(perplexity) for p_j ∝ exp(-beta * d2_j). Distances are shifted by
// the row minimum, which leaves p unchanged and keeps exp() in range. Writes p (sums to 1)
// and returns beta [1 / input units^2]. Done in double on both backends.
template <class T>
EM_HD double calibrate_row(const T* d2, int k, double log_perp, double tol, int max_iter, T* p) {
  double dmin = double(d2[0]);
  for (int j = 1; j < k; ++j) dmin = double(d2[j]) < dmin ? double(d2[j]) : dmin;
  double mean = 0.0;
  for (int j = 0; j < k; ++j) mean += double(d2[j]) - dmin;
  mean /= k;
  double beta = mean > 0.0 ? 1.0 / mean : 1.0;
  double lo = 0.0, hi = INFINITY;
  double sum = 0.0;
  for (int it = 0; it < max_iter; ++it) {
    sum = 0.0;
    double wsum = 0.0;
    for (int j = 0; j < k; ++j) {
      const double s = double(d2[j]) - dmin;
      const double e = exp(-beta * s);
      sum += e;
      wsum += e * s;
    }
    const double h = log(sum) + beta * wsum / sum;  // entropy in nats
    const double diff = h - log_perp;
    if (diff < tol && -diff < tol) break;
    if (diff > 0.0) {  // too flat: sharpen
      lo = beta;
      beta = (hi == INFINITY) ? beta * 2.0 : 0.5 * (beta + hi);
    } else {
      hi = beta;
      beta = 0.5 * (beta + lo);
    }
  }
  sum = 0.0;
  for (int j = 0; j < k; ++j) sum += exp(-beta * (double(d2[j]) - dmin));
  for (int j = 0; j < k; ++j) p[j] = T(exp(-beta * (double(d2[j]) - dmin)) / sum);
  return beta;
}

// Squared Euclidean distance |a - b|^2 of two rows of length d, summed in double.
template <class T> EM_HD double squared_distance(const T* a, const T* b, int64_t d) {
  double s = 0.0;
  for (int64_t c = 0; c < d; ++c) {
    const double t = double(a[c]) - double(b[c]);
    s += t * t;
  }
  return s;
}

// One attractive pair term, accumulated into (ax, ay): p_ij w_ij (y_i - y_j); returns w_ij.
template <class A> EM_HD A attractive_pair(A xi, A yi, A xj, A yj, A pij, A& ax, A& ay) {
  const A dx = xi - xj, dy = yi - yj;
  const A w = A(1) / (A(1) + dx * dx + dy * dy);
  const A pw = pij * w;
  ax += pw * dx;
  ay += pw * dy;
  return w;
}

// Attractive force of row i over its CSR entries [begin, end): sum_j p_ij w_ij (y_i - y_j),
// and sum_j p_ij ln w_ij (the data-dependent part of KL) when want_kl. I: int32 or int64.
template <class T, class I, class A>
EM_HD void attractive_row(const T* y, const I* indices, const T* values, int64_t i, int64_t begin,
                          int64_t end, bool want_kl, A* fx, A* fy, double* plogw) {
  const A xi = A(y[2 * i]), yi = A(y[2 * i + 1]);
  A ax = A(0), ay = A(0);
  double kl = 0.0;
  for (int64_t e = begin; e < end; ++e) {
    const int64_t j = int64_t(indices[e]);
    const A w = attractive_pair(xi, yi, A(y[2 * j]), A(y[2 * j + 1]), A(values[e]), ax, ay);
    if (want_kl) kl += double(values[e]) * log(double(w));
  }
  *fx = ax;
  *fy = ay;
  *plogw = kl;
}

// One exact repulsive pair term, accumulated into (rx, ry, z): w^2 (y_i - y_j) and w.
template <class A>
EM_HD void repulsive_pair(A xi, A yi, A xj, A yj, A& rx, A& ry, A& z) {
  const A dx = xi - xj, dy = yi - yj;
  const A w = A(1) / (A(1) + dx * dx + dy * dy);
  const A w2 = w * w;
  rx += w2 * dx;
  ry += w2 * dy;
  z += w;
}

// Lagrange weights of the p equispaced nodes (m + 1/2)/p, m = 0..p-1, of one box at the
// box-local coordinate u in [0, 1] (FIt-SNE's interpolation within a box).
template <class A> EM_HD void lagrange_weights(A u, int p, A* w) {
  for (int m = 0; m < p; ++m) {
    const A sm = (A(m) + A(0.5)) / A(p);
    A num = A(1), den = A(1);
    for (int l = 0; l < p; ++l) {
      if (l == m) continue;
      const A sl = (A(l) + A(0.5)) / A(p);
      num *= u - sl;
      den *= sm - sl;
    }
    w[m] = num / den;
  }
}

// Box index and box-local coordinate of coordinate v on a grid of n_boxes boxes of width h
// starting at lower.
template <class A> EM_HD int box_of(A v, A lower, A h, int n_boxes, A* u) {
  const A t = (v - lower) / h;
  int b = int(floor(t));
  b = b < 0 ? 0 : (b >= n_boxes ? n_boxes - 1 : b);
  *u = t - A(b);
  return b;
}

// The charges of point (x, y) for the kernel K = w^2: 1, x, y (kCharges of them).
constexpr int kCharges = 3;
template <class A> EM_HD void charges(A x, A y, A* c) {
  c[0] = A(1);
  c[1] = x;
  c[2] = y;
}

// From the kernel sums phi_c = sum_j w_ij^2 c_j at point i: the repulsive force
// sum_j w_ij^2 (y_i - y_j), and zrow_i = (1 + 2|y_i|^2) phi_0 - 2 y_i . (phi_1, phi_2). Because
// w = w^2 (1 + |y_i - y_j|^2) and sum_i sum_j w_ij^2 |y_j|^2 = sum_j |y_j|^2 phi_0(j) by symmetry,
// sum_i zrow_i = sum_{i, j} w_ij (j = i included) exactly, with three charges instead of
// FIt-SNE's four; zrow_i alone is not the row sum of w.
template <class A> EM_HD void combine_potentials(A x, A y, const A* phi, A* rx, A* ry, A* zrow) {
  *rx = x * phi[0] - phi[1];
  *ry = y * phi[0] - phi[2];
  *zrow = (A(1) + A(2) * (x * x + y * y)) * phi[0] - A(2) * (x * phi[1] + y * phi[2]);
}

// P > 0: the node count is a compile-time constant (the CPU instantiates p = 3, 4), so the
// weight loops unroll and the node constants fold; P = 0: g.p at run time.
// Spread point i's charges onto its box's p x p interpolation nodes of the grid [kCharges, m, m];
// add(index, value) accumulates (a plain += on the CPU, where boxes are owned by one thread; an
// atomicAdd on the GPU).
template <int P = 0, class T, class Frame, class Add>
EM_HD void spread_point(int64_t i, const Frame& g, const T* y, Add add) {
  const int p = P > 0 ? P : g.p;
  const int64_t cells = g.m * g.m;
  const T x = y[2 * i], v = y[2 * i + 1];
  T ux, uy, wx[kMaxInterp], wy[kMaxInterp], c[kCharges];
  const int bx = box_of(x, g.lx, g.h, g.nb, &ux);
  const int by = box_of(v, g.ly, g.h, g.nb, &uy);
  lagrange_weights(ux, p, wx);
  lagrange_weights(uy, p, wy);
  charges(x - g.cx, v - g.cy, c);
  for (int my = 0; my < p; ++my) {
    const int64_t rowoff = (int64_t(by) * p + my) * g.m + int64_t(bx) * p;
    for (int mx = 0; mx < p; ++mx) {
      const T w = wx[mx] * wy[my];
      for (int k = 0; k < kCharges; ++k) add(k * cells + rowoff + mx, w * c[k]);
    }
  }
}

// Interpolate the grid potentials [kCharges, m, m] at point i and write its repulsive force
// [2] and its share of the normalisation Z, minus the self term, to zrow[i].
template <int P = 0, class T, class Frame>
EM_HD void gather_point(int64_t i, const Frame& g, const T* y, const T* pot, T* force, double* zrow) {
  const int p = P > 0 ? P : g.p;
  const int64_t cells = g.m * g.m;
  const T x = y[2 * i], v = y[2 * i + 1];
  T ux, uy, wx[kMaxInterp], wy[kMaxInterp], phi[kCharges] = {T(0), T(0), T(0)};
  const int bx = box_of(x, g.lx, g.h, g.nb, &ux);
  const int by = box_of(v, g.ly, g.h, g.nb, &uy);
  lagrange_weights(ux, p, wx);
  lagrange_weights(uy, p, wy);
  for (int my = 0; my < p; ++my) {
    const int64_t rowoff = (int64_t(by) * p + my) * g.m + int64_t(bx) * p;
    for (int mx = 0; mx < p; ++mx) {
      const T w = wx[mx] * wy[my];
      for (int k = 0; k < kCharges; ++k) phi[k] += w * pot[k * cells + rowoff + mx];
    }
  }
  T rx, ry, z;
  combine_potentials(x - g.cx, v - g.cy, phi, &rx, &ry, &z);
  force[2 * i] = rx;
  force[2 * i + 1] = ry;
  zrow[i] = double(z) - 1.0;
}

// One optimiser step for one point (delta-bar-delta gains, momentum, per-point step clip):
//   g = alpha * attr - rep / Z;  gain += 0.2 if sign(g) != sign(update) else gain *= 0.8;
//   update = momentum * update - lr * gain * g;  y += update.
template <class A>
EM_HD void step_point(A* y, A* upd, A* gain, const A* attr, const A* rep, A alpha, A inv_z,
                      A momentum, A lr, A min_gain, A max_step) {
  A u[2];
  for (int d = 0; d < 2; ++d) {
    const A g = alpha * attr[d] - inv_z * rep[d];
    const int sg = (g > A(0)) - (g < A(0)), su = (upd[d] > A(0)) - (upd[d] < A(0));
    A gn = (sg != su) ? gain[d] + A(0.2) : gain[d] * A(0.8);
    gn = gn < min_gain ? min_gain : gn;
    gain[d] = gn;
    u[d] = momentum * upd[d] - lr * gn * g;
  }
  if (max_step > A(0)) {
    const A norm = sqrt(u[0] * u[0] + u[1] * u[1]);
    if (norm > max_step) {
      u[0] *= max_step / norm;
      u[1] *= max_step / norm;
    }
  }
  for (int d = 0; d < 2; ++d) {
    upd[d] = u[d];
    y[d] += u[d];
  }
}

}  // namespace tsne
}  // namespace em
