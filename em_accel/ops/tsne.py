"""t-SNE kernels as torch ops, and their pure-torch references.

Conventions (openTSNE/FIt-SNE, no factor 4 in the gradient), for an embedding ``y`` [N, 2]:

    w_ij = 1 / (1 + |y_i - y_j|^2),   Z = sum_{k != l} w_kl,
    dC/dy_i = alpha * sum_j p_ij w_ij (y_i - y_j)  -  (1/Z) * sum_j w_ij^2 (y_i - y_j).

The ops compute the pieces: perplexity calibration of kNN rows, the attractive term over a
sparse symmetric P (CSR), the repulsive term exactly (tiled O(N^2)) or by FFT-accelerated
interpolation (FIt-SNE: spread charges to a grid, convolve with w^2 by FFT, gather), and a
fused optimiser step (gains, momentum, step clip). Distances are in embedding units.

Data flow of one gradient: ``em_accel.embed.tsne`` -> ``em_accel::tsne_attractive`` ->
``_native.tsne.attractive_{cpu,cuda}`` -> ``tsne::attractive_row`` (csrc/tsne/tsne.h); the
repulsion -> ``em_accel::tsne_repulsive_exact``, or ``em_accel::tsne_interp_spread`` +
``em_accel.embed.fft_forces.convolve_grid`` (torch.fft) + ``em_accel::tsne_interp_gather``.
"""
from __future__ import annotations

import math

import torch

from .. import _native
from . import _validate
from ._common import DTYPE_CODES, check_same_device, check_tensor, launch, native_op
from ._registry import OpSpec

REAL_DTYPES = (torch.float32, torch.float64)
_T = _native.tsne


def _check_y(y: torch.Tensor, name: str = "y") -> None:
    check_tensor(name, y, dtypes=REAL_DTYPES, ndim=2)
    if y.shape[1] != 2:
        raise ValueError(f"{name} must have shape [N, 2], got {list(y.shape)}")


# ---------------------------------------------------------------------------------------------
# References (the executable spec), float64-capable, written from the equations.

def perplexity_reference(d2: torch.Tensor, perplexity: float, tol: float = 1e-5,
                         max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for em_accel::tsne_perplexity: vectorised bisection on beta per row.

    Returns (p [N, k] with rows summing to 1, beta [N] float64) such that the entropy of
    p_j ∝ exp(-beta d2_j) is ln(perplexity) nats.
    """
    d = d2.to(torch.float64)
    d = d - d.min(dim=1, keepdim=True).values
    target = math.log(perplexity)
    mean = d.mean(dim=1)
    beta = torch.where(mean > 0, 1.0 / mean.clamp_min(1e-300), torch.ones_like(mean))
    lo = torch.zeros_like(beta)
    hi = torch.full_like(beta, math.inf)
    done = torch.zeros_like(beta, dtype=torch.bool)
    for _ in range(max_iter):
        e = torch.exp(-beta[:, None] * d)
        s = e.sum(1)
        h = torch.log(s) + beta * (e * d).sum(1) / s
        diff = h - target
        done = done | (diff.abs() < tol)
        if bool(done.all()):
            break
        up = (diff > 0) & ~done
        down = (diff <= 0) & ~done
        lo = torch.where(up, beta, lo)
        hi = torch.where(down, beta, hi)
        new_up = torch.where(torch.isinf(hi), beta * 2, 0.5 * (beta + hi))
        new_down = 0.5 * (beta + lo)
        beta = torch.where(up, new_up, torch.where(down, new_down, beta))
    e = torch.exp(-beta[:, None] * d)
    return (e / e.sum(1, keepdim=True)).to(d2.dtype), beta


def neighbor_d2_reference(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reference for em_accel::tsne_neighbor_d2: d2 [N, k] = |x_i - x_idx[i, j]|^2 (x's units^2)
    from the differences, summed in float64."""
    xd = x.double()
    return ((xd[:, None, :] - xd[idx]) ** 2).sum(-1).to(x.dtype)


def attractive_reference(y: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
                         values: torch.Tensor, want_kl: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for em_accel::tsne_attractive.

    Returns (force [N, 2] = sum_j p_ij w_ij (y_i - y_j), plogw [N] float64 = sum_j p_ij ln w_ij,
    zeros unless ``want_kl``).
    """
    n = y.shape[0]
    rows = torch.repeat_interleave(torch.arange(n, device=y.device), indptr[1:] - indptr[:-1])
    diff = y[rows] - y[indices]
    w = 1.0 / (1.0 + (diff * diff).sum(1))
    force = torch.zeros_like(y).index_add_(0, rows, (values * w)[:, None] * diff)
    plogw = torch.zeros(n, dtype=torch.float64, device=y.device)
    if want_kl:
        plogw.index_add_(0, rows, values.double() * torch.log(w.double()))
    return force, plogw


def repulsive_exact_reference(y: torch.Tensor, chunk: int = 2048
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for em_accel::tsne_repulsive_exact (dense, chunked over rows).

    Returns (force [N, 2] = sum_{j != i} w_ij^2 (y_i - y_j), zrow [N] float64 = sum_{j != i} w_ij).
    """
    forces, zrows = [], []
    for i0 in range(0, y.shape[0], chunk):
        yi = y[i0:i0 + chunk]
        diff = yi[:, None, :] - y[None, :, :]
        w = 1.0 / (1.0 + (diff * diff).sum(-1))
        forces.append(((w * w)[..., None] * diff).sum(1))
        zrows.append(w.double().sum(1) - 1.0)  # minus the w_ii = 1 term
    if not forces:
        return torch.zeros_like(y), torch.zeros(0, dtype=torch.float64, device=y.device)
    return torch.cat(forces), torch.cat(zrows)


def _lagrange_reference(u: torch.Tensor, p: int) -> torch.Tensor:
    nodes = [(m + 0.5) / p for m in range(p)]
    cols = []
    for m in range(p):
        w = torch.ones_like(u)
        for l in range(p):
            if l != m:
                w = w * (u - nodes[l]) / (nodes[m] - nodes[l])
        cols.append(w)
    return torch.stack(cols, -1)


def _interp_weights_reference(y, n_boxes, p, lower_x, lower_y, box_width):
    lower = torch.tensor([lower_x, lower_y], dtype=y.dtype, device=y.device)
    t = (y - lower) / box_width
    box = torch.floor(t).clamp(0, n_boxes - 1)
    w = _lagrange_reference(t - box, p)  # [N, 2, p]
    node = box.long()[..., None] * p + torch.arange(p, device=y.device)  # [N, 2, p]
    centre = lower + 0.5 * n_boxes * box_width
    return w, node, y - centre


def interp_spread_reference(y: torch.Tensor, n_boxes: int, p: int, lower_x: float,
                            lower_y: float, box_width: float) -> torch.Tensor:
    """Reference for em_accel::tsne_interp_spread: grid [3, m, m] (m = n_boxes * p) of the
    charges (1, y1, y2) (coordinates relative to the grid centre) spread with the
    tensor-product Lagrange weights of each point's box; index [c, row (y2), col (y1)]."""
    m = n_boxes * p
    w, node, yc = _interp_weights_reference(y, n_boxes, p, lower_x, lower_y, box_width)
    c = torch.stack([torch.ones_like(yc[:, 0]), yc[:, 0], yc[:, 1]], 0)
    ww = w[:, 1, :, None] * w[:, 0, None, :]  # [N, p(rows), p(cols)]
    flat = (node[:, 1, :, None] * m + node[:, 0, None, :]).reshape(-1)
    grid = torch.zeros(3, m * m, dtype=y.dtype, device=y.device)
    for k in range(3):
        grid[k].index_add_(0, flat, (ww * c[k][:, None, None]).reshape(-1))
    return grid.reshape(3, m, m)


def interp_gather_reference(y: torch.Tensor, potentials: torch.Tensor, n_boxes: int, p: int,
                            lower_x: float, lower_y: float, box_width: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for em_accel::tsne_interp_gather: interpolate the three potentials
    phi_c = sum_j w_ij^2 c_j to the points and combine them into force [N, 2] =
    y_i phi_0 - (phi_1, phi_2) and zrow [N] float64 = (1 + 2|y_i|^2) phi_0 - 2 y_i . (phi_1, phi_2) - 1,
    whose sum is Z (symmetry of w^2 replaces FIt-SNE's fourth charge |y|^2)."""
    m = n_boxes * p
    w, node, yc = _interp_weights_reference(y, n_boxes, p, lower_x, lower_y, box_width)
    ww = w[:, 1, :, None] * w[:, 0, None, :]
    flat = node[:, 1, :, None] * m + node[:, 0, None, :]
    phi = [(potentials[k].reshape(-1)[flat] * ww).sum((1, 2)) for k in range(3)]
    x1, x2 = yc[:, 0], yc[:, 1]
    force = torch.stack([x1 * phi[0] - phi[1], x2 * phi[0] - phi[2]], 1)
    z = (1 + 2 * (x1 * x1 + x2 * x2)) * phi[0] - 2 * (x1 * phi[1] + x2 * phi[2])
    return force, z.double() - 1.0


def step_reference(y, update, gains, attr, rep, alpha, inv_z, momentum, lr, min_gain, max_step):
    """Reference for em_accel::tsne_step: returns the new (y re-centred, update, gains) and the
    bounding box [4] float64 (min x, min y, max x, max y) of the new y."""
    y, update, gains = y.clone(), update.clone(), gains.clone()
    g = alpha * attr - inv_z * rep
    differ = torch.sign(g) != torch.sign(update)
    new_gains = torch.where(differ, gains + 0.2, gains * 0.8).clamp_min(min_gain)
    u = momentum * update - lr * new_gains * g
    if max_step > 0:
        norm = u.norm(dim=1, keepdim=True)
        u = torch.where(norm > max_step, u * (max_step / norm), u)
    gains.copy_(new_gains)
    update.copy_(u)
    y.add_(u)
    y.sub_(y.double().mean(0).to(y.dtype))
    return y, update, gains, torch.cat([y.min(0).values, y.max(0).values]).double()


# ---------------------------------------------------------------------------------------------
# Ops.

def _check_perplexity(d2, perplexity, tol, max_iter):
    check_tensor("d2", d2, dtypes=REAL_DTYPES, ndim=2)
    k = d2.shape[1]
    if k < 2:
        raise ValueError(f"d2 needs at least 2 neighbours per row, got shape {list(d2.shape)}")
    if not 1.0 < perplexity <= k:
        raise ValueError(f"perplexity must be in (1, k = {k}] for {k} neighbours, got {perplexity}")
    if not tol > 0 or max_iter < 1:
        raise ValueError(f"tol must be > 0 and max_iter >= 1, got {tol}, {max_iter}")


@native_op("em_accel::tsne_perplexity")
def tsne_perplexity(d2: torch.Tensor, perplexity: float, tol: float, max_iter: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional affinities p_{j|i} [N, k] and precisions beta [N] (float64) from the squared
    distances d2 [N, k] to each point's k neighbours; see perplexity_reference."""
    _check_perplexity(d2, perplexity, tol, max_iter)
    p = torch.empty_like(d2)
    beta = torch.empty(d2.shape[0], dtype=torch.float64, device=d2.device)
    q = _T.PerplexityParams()
    q.n, q.k, q.dtype = d2.shape[0], d2.shape[1], DTYPE_CODES[d2.dtype]
    q.perplexity, q.tol, q.max_iter = float(perplexity), float(tol), int(max_iter)
    launch(_T, "perplexity", d2.device, q, d2.data_ptr(), p.data_ptr(), beta.data_ptr(),
           op="em_accel::tsne_perplexity")
    return p, beta


@tsne_perplexity.register_fake
def _(d2, perplexity, tol, max_iter):
    _check_perplexity(d2, perplexity, tol, max_iter)
    return torch.empty_like(d2), d2.new_empty(d2.shape[0], dtype=torch.float64)


def _check_neighbors(x, idx):
    check_tensor("x", x, dtypes=REAL_DTYPES, ndim=2)
    check_tensor("idx", idx, dtypes=(torch.int64,), ndim=2)
    check_same_device(x=x, idx=idx)
    if idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx must have one row per row of x ({x.shape[0]}), got {list(idx.shape)}")


@native_op("em_accel::tsne_neighbor_d2")
def tsne_neighbor_d2(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Squared distances d2 [N, k] from each row of x [N, D] to its listed neighbours idx [N, k]
    (int64 in [0, N)); see neighbor_d2_reference. One pass over x, no [N, k, D] temporary."""
    _check_neighbors(x, idx)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= x.shape[0]):
        raise ValueError(f"idx entries must be in [0, {x.shape[0]}), got "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    d2 = torch.empty(idx.shape, dtype=x.dtype, device=x.device)
    q = _T.NeighborParams()
    q.n, q.k, q.d, q.dtype = x.shape[0], idx.shape[1], x.shape[1], DTYPE_CODES[x.dtype]
    launch(_T, "neighbor_d2", x.device, q, x.data_ptr(), idx.data_ptr(), d2.data_ptr(),
           op="em_accel::tsne_neighbor_d2")
    return d2


@tsne_neighbor_d2.register_fake
def _(x, idx):
    _check_neighbors(x, idx)
    return x.new_empty(idx.shape)


def _check_csr(y, indptr, indices, values):
    _check_y(y)
    n = y.shape[0]
    check_tensor("indptr", indptr, dtypes=(torch.int64,), shape=(n + 1,))
    check_tensor("indices", indices, dtypes=(torch.int32, torch.int64), ndim=1)
    check_tensor("values", values, dtypes=(y.dtype,), shape=tuple(indices.shape))
    check_same_device(y=y, indptr=indptr, indices=indices, values=values)


@native_op("em_accel::tsne_attractive")
def tsne_attractive(y: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
                    values: torch.Tensor, want_kl: bool, check: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attractive force over the CSR matrix P; see attractive_reference. ``indices`` may be
    int32 (a third fewer bytes per entry than int64: the faster pass) or int64. ``check``
    verifies the CSR (indptr from 0 to nnz, non-decreasing, indices in [0, N)) in one pass;
    False only for callers that built it (the t-SNE loop checks once, then skips)."""
    _check_csr(y, indptr, indices, values)
    if check:
        _validate.csr(indptr, indices, y.shape[0])
    force = torch.empty_like(y)
    plogw = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
    q = _T.AttractiveParams()
    q.n, q.dtype, q.want_kl = y.shape[0], DTYPE_CODES[y.dtype], int(want_kl)
    q.index_bits = 32 if indices.dtype == torch.int32 else 64
    args = (y.data_ptr(), indptr.data_ptr(), indices.data_ptr(), values.data_ptr(),
            force.data_ptr(), plogw.data_ptr())
    launch(_T, "attractive", y.device, q, *args, op="em_accel::tsne_attractive")
    return force, plogw


@tsne_attractive.register_fake
def _(y, indptr, indices, values, want_kl, check=True):
    _check_csr(y, indptr, indices, values)
    return torch.empty_like(y), y.new_empty(y.shape[0], dtype=torch.float64)


@native_op("em_accel::tsne_repulsive_exact")
def tsne_repulsive_exact(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact repulsive force (not divided by Z) and row sums of w; see repulsive_exact_reference."""
    _check_y(y)
    force = torch.empty_like(y)
    zrow = torch.empty(y.shape[0], dtype=torch.float64, device=y.device)
    q = _T.RepulsiveParams()
    q.n, q.dtype = y.shape[0], DTYPE_CODES[y.dtype]
    launch(_T, "repulsive_exact", y.device, q, y.data_ptr(), force.data_ptr(), zrow.data_ptr(),
           op="em_accel::tsne_repulsive_exact")
    return force, zrow


@tsne_repulsive_exact.register_fake
def _(y):
    _check_y(y)
    return torch.empty_like(y), y.new_empty(y.shape[0], dtype=torch.float64)


def _check_grid(n_boxes, p, box_width):
    if not 1 <= p <= int(_T.MAX_INTERP):
        raise ValueError(f"p (interpolation nodes per box) must be in [1, {_T.MAX_INTERP}], got {p}")
    if n_boxes < 1:
        raise ValueError(f"n_boxes must be >= 1, got {n_boxes}")
    if not (box_width > 0 and math.isfinite(box_width)):
        raise ValueError(f"box_width must be finite and > 0, got {box_width}")


def _interp_params(y, n_boxes, p, lower_x, lower_y, box_width):
    q = _T.InterpParams()
    q.n, q.dtype, q.n_boxes, q.p = y.shape[0], DTYPE_CODES[y.dtype], int(n_boxes), int(p)
    q.lower_x, q.lower_y, q.box_width = float(lower_x), float(lower_y), float(box_width)
    return q


@native_op("em_accel::tsne_interp_spread")
def tsne_interp_spread(y: torch.Tensor, n_boxes: int, p: int, lower_x: float, lower_y: float,
                       box_width: float) -> torch.Tensor:
    """Charges spread to the interpolation grid [3, m, m]; see interp_spread_reference."""
    _check_y(y)
    _check_grid(n_boxes, p, box_width)
    m = n_boxes * p
    grid = torch.empty(3, m, m, dtype=y.dtype, device=y.device)
    q = _interp_params(y, n_boxes, p, lower_x, lower_y, box_width)
    # the CPU kernel sorts points into boxes in scratch arrays
    scratch = () if y.device.type == "cuda" else (torch.empty(y.shape[0], dtype=torch.int64),
                                                   torch.empty(n_boxes + 1, dtype=torch.int64))
    launch(_T, "interp_spread", y.device, q, y.data_ptr(), grid.data_ptr(),
           op="em_accel::tsne_interp_spread", cpu_args=tuple(t.data_ptr() for t in scratch))
    return grid


@tsne_interp_spread.register_fake
def _(y, n_boxes, p, lower_x, lower_y, box_width):
    _check_y(y)
    _check_grid(n_boxes, p, box_width)
    return y.new_empty(3, n_boxes * p, n_boxes * p)


@native_op("em_accel::tsne_interp_gather")
def tsne_interp_gather(y: torch.Tensor, potentials: torch.Tensor, n_boxes: int, p: int,
                       lower_x: float, lower_y: float, box_width: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Potentials interpolated to the points, combined to (force, zrow); see
    interp_gather_reference."""
    _check_y(y)
    _check_grid(n_boxes, p, box_width)
    m = n_boxes * p
    check_tensor("potentials", potentials, dtypes=(y.dtype,), shape=(3, m, m))
    check_same_device(y=y, potentials=potentials)
    force = torch.empty_like(y)
    zrow = torch.empty(y.shape[0], dtype=torch.float64, device=y.device)
    q = _interp_params(y, n_boxes, p, lower_x, lower_y, box_width)
    args = (y.data_ptr(), potentials.data_ptr(), force.data_ptr(), zrow.data_ptr())
    launch(_T, "interp_gather", y.device, q, *args, op="em_accel::tsne_interp_gather")
    return force, zrow


@tsne_interp_gather.register_fake
def _(y, potentials, n_boxes, p, lower_x, lower_y, box_width):
    _check_y(y)
    return torch.empty_like(y), y.new_empty(y.shape[0], dtype=torch.float64)


def _check_step(y, update, gains, attr, rep):
    _check_y(y)
    for name, t in (("update", update), ("gains", gains), ("attr", attr), ("rep", rep)):
        check_tensor(name, t, dtypes=(y.dtype,), shape=tuple(y.shape))
    check_same_device(y=y, update=update, gains=gains, attr=attr, rep=rep)


@native_op("em_accel::tsne_step")
def tsne_step(y: torch.Tensor, update: torch.Tensor, gains: torch.Tensor, attr: torch.Tensor,
              rep: torch.Tensor, alpha: float, inv_z: float, momentum: float, lr: float,
              min_gain: float, max_step: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fused optimiser step with re-centring: returns new (y, update, gains) and the new
    bounding box [4] float64; see step_reference. (The kernel runs in place on copies.)"""
    _check_step(y, update, gains, attr, rep)
    y, update, gains = y.clone(), update.clone(), gains.clone()
    bbox = torch.empty(4, dtype=torch.float64, device=y.device)
    q = _T.StepParams()
    q.n, q.dtype = y.shape[0], DTYPE_CODES[y.dtype]
    q.alpha, q.inv_z, q.momentum, q.lr = float(alpha), float(inv_z), float(momentum), float(lr)
    q.min_gain, q.max_step = float(min_gain), float(max_step)
    args = (y.data_ptr(), update.data_ptr(), gains.data_ptr(), attr.data_ptr(), rep.data_ptr(),
            bbox.data_ptr())
    launch(_T, "step", y.device, q, *args, op="em_accel::tsne_step",
           cuda_workspace_doubles=_T.step_workspace_doubles(y.shape[0]))
    return y, update, gains, bbox


@tsne_step.register_fake
def _(y, update, gains, attr, rep, alpha, inv_z, momentum, lr, min_gain, max_step):
    _check_step(y, update, gains, attr, rep)
    return (torch.empty_like(y), torch.empty_like(update), torch.empty_like(gains),
            y.new_empty(4, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Sample inputs shared by the tests and the benchmark.

def sample_embedding(n: int = 200, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, seed: int = 0, scale: float = 5.0
                     ) -> torch.Tensor:
    """A clustered 2-D embedding [n, 2]: three Gaussian blobs [embedding units]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-1.0, 4.0]], dtype=torch.float64) * scale
    y = centres[torch.arange(n) % 3] + torch.randn(n, 2, generator=g, dtype=torch.float64) * scale / 3
    return y.to(device=device, dtype=dtype)


def symmetric_csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR (indptr, indices, values) of the n x n matrix A + A^T, A given as COO triplets
    (duplicates summed), with columns sorted within each row."""
    r = torch.cat([rows, cols]).long()
    c = torch.cat([cols, rows]).long()
    key, inverse = torch.unique(r * n + c, return_inverse=True)
    values = torch.zeros(key.shape[0], dtype=vals.dtype, device=vals.device)
    values.index_add_(0, inverse, torch.cat([vals, vals]))
    counts = torch.bincount(key // n, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=vals.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, key % n, values


def permute_csr(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR of the square matrix A relabelled by ``perm`` (new index r = old index perm[r]):
    B[r, c] = A[perm[r], perm[c]]. Columns keep their order within a row (not re-sorted)."""
    n = indptr.shape[0] - 1
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=perm.device)
    counts = (indptr[1:] - indptr[:-1])[perm]
    new_ptr = torch.zeros_like(indptr)
    new_ptr[1:] = torch.cumsum(counts, 0)
    # source entry of every new entry: old row start + position within the row
    start = torch.repeat_interleave(indptr[:-1][perm] - new_ptr[:-1], counts)
    src = start + torch.arange(int(new_ptr[-1]), device=indptr.device)
    return new_ptr, inv[indices[src].long()].to(indices.dtype), values[src]


def sample_csr(n: int = 200, k: int = 6, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, seed: int = 1) -> tuple:
    """A random symmetric CSR P (indptr, indices, values), sum 1, no diagonal."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(k)
    cols = (rows + torch.randint(1, n, (n * k,), generator=g)) % n
    vals = torch.rand(n * k, generator=g, dtype=torch.float64)
    indptr, indices, values = symmetric_csr(rows, cols, vals, n)
    values = values / values.sum()
    return indptr.to(device), indices.to(device), values.to(device=device, dtype=dtype)


def _sample_perplexity(device="cpu", dtype=torch.float32, requires_grad=False, n=64, k=24):
    g = torch.Generator().manual_seed(2)
    d2 = (torch.rand(n, k, generator=g, dtype=torch.float64) * 10).sort(1).values
    return d2.to(device=device, dtype=dtype), 8.0, 1e-5, 200


def _sample_neighbor_d2(device="cpu", dtype=torch.float32, requires_grad=False, n=120, k=7):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(n, 33, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    idx = torch.randint(0, n, (n, k), generator=g).to(device)
    return x, idx


def _sample_attractive(device="cpu", dtype=torch.float32, requires_grad=False, n=200):
    return (sample_embedding(n, device, dtype), *sample_csr(n, 6, device, dtype), True)


def _sample_repulsive(device="cpu", dtype=torch.float32, requires_grad=False, n=300):
    return (sample_embedding(n, device, dtype),)


def _sample_grid(y):
    """(n_boxes, p, lower_x, lower_y, box_width) over y's bounding square: about 8 boxes of a
    power-of-two width (exact in floating point), 3 nodes each."""
    lo, hi = y.min(0).values.double().cpu(), y.max(0).values.double().cpu()
    extent = float((hi - lo).max()) * (1 + 1e-6)
    width = 2.0 ** math.floor(math.log2(extent / 8))
    return math.ceil(extent / width), 3, float(lo[0]), float(lo[1]), width


def _sample_spread(device="cpu", dtype=torch.float32, requires_grad=False, n=300):
    y = sample_embedding(n, device, dtype)
    return (y, *_sample_grid(y))


def _sample_gather(device="cpu", dtype=torch.float32, requires_grad=False, n=300):
    y = sample_embedding(n, device, dtype)
    g = _sample_grid(y)
    m = g[0] * g[1]
    gen = torch.Generator().manual_seed(3)
    pot = torch.randn(3, m, m, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return (y, pot, *g)


def _sample_step(device="cpu", dtype=torch.float32, requires_grad=False, n=100):
    gen = torch.Generator().manual_seed(4)
    mk = lambda s=1.0: (torch.randn(n, 2, generator=gen, dtype=torch.float64) * s).to(device=device, dtype=dtype)
    gains = torch.ones(n, 2, dtype=dtype, device=device)
    return (mk(), mk(0.1), gains, mk(), mk(), 12.0, 1e-3, 0.5, 20.0, 0.01, 5.0)


OP_SPECS = [
    OpSpec("tsne_perplexity", perplexity_reference, _sample_perplexity, False, "tsne"),
    OpSpec("tsne_neighbor_d2", neighbor_d2_reference, _sample_neighbor_d2, False, "tsne"),
    OpSpec("tsne_attractive", attractive_reference, _sample_attractive, False, "tsne"),
    OpSpec("tsne_repulsive_exact", repulsive_exact_reference, _sample_repulsive, False, "tsne"),
    OpSpec("tsne_interp_spread", interp_spread_reference, _sample_spread, False, "tsne"),
    OpSpec("tsne_interp_gather", interp_gather_reference, _sample_gather, False, "tsne"),
    OpSpec("tsne_step", step_reference, _sample_step, False, "tsne"),
]
