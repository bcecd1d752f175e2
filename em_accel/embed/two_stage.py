"""Two-stage exact search over several views of each query when the views permute the
features (raw pixels under rotations and flips): a cheap coarse stage that bounds every item's
distance from below, then the exact distance (nearest view) for the few items that can win.

Why it is exact: let the views be coordinate permutations ``q_v = q[perm_v]`` and group the
coordinates into orbits (the sets the permutations move a coordinate among). Sorting the values
within each orbit, S(x), is invariant to every view, and sorting is a contraction:
``|S(a) - S(b)| <= |a - b[perm]|`` for any orbit-preserving permutation (rearrangement
inequality). A centred orthogonal projection P onto ``m`` principal axes of the items' S(x) and
the norm r of what it leaves out are contractions too, so

    LB(q, i)² = |P S(q) - P S(f_i)|² + (r_q - r_i)²  <=  min_v |q_v - f_i|²,

an (m+1)-d Euclidean distance computed with one view of the query. The items with the smallest
LB are re-ranked exactly; when the next-smallest LB is above the k-th exact distance no other
item can enter the top k (certified), otherwise every item with LB below it is re-ranked too.
So the result equals the exhaustive search up to float rounding (ties may swap).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

#: Principal axes of the coarse stage: 64 + the residual norm (measured in docs/maps.md).
COARSE_DIMS = 64
#: Items re-ranked exactly per query before the certificate is checked.
POOL = 64


def dihedral_permutations(side: int) -> torch.Tensor:
    """[8, side²] int64: row v maps the flattened ``side`` x ``side`` grid to its v-th dihedral
    transform as :func:`em_accel.embed.features.dihedral_views` orders them
    (``view_v.flatten() == x.flatten()[perm[v]]``; row 0 is the identity)."""
    from .features import dihedral_views

    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    grid = torch.arange(side * side, dtype=torch.float64).reshape(1, side, side)
    return dihedral_views(grid).reshape(8, -1).round().long()


def check_permutations(perms, dim: int) -> torch.Tensor:
    """``perms`` as an int64 [V, dim] tensor whose rows are permutations of range(dim)."""
    p = torch.as_tensor(perms)
    if p.dim() != 2 or p.shape[1] != dim or p.shape[0] < 1 or p.is_floating_point():
        raise ValueError(f"view permutations must be an integer [V, {dim}] tensor, got "
                         f"{p.dtype} {list(p.shape)}")
    p = p.long().cpu()
    if not torch.equal(p.sort(1).values, torch.arange(dim).expand_as(p)):
        raise ValueError("every row of the view permutations must be a permutation of "
                         f"0 .. {dim - 1}")
    return p.contiguous()


def orbits(perms: torch.Tensor) -> list[torch.Tensor]:
    """The coordinates' orbits under the permutations (closure of i -> perm_v[i]), grouped by
    size: a list of [n_orbits, size] index tensors, one per size, sizes ascending."""
    dim = perms.shape[1]
    parent = list(range(dim))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row in perms.tolist():
        for i, j in enumerate(row):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(dim):
        groups.setdefault(root(i), []).append(i)
    by_size: dict[int, list[list[int]]] = {}
    for members in groups.values():
        by_size.setdefault(len(members), []).append(members)
    return [torch.tensor(by_size[s], dtype=torch.int64) for s in sorted(by_size)]


def orbit_sort(x: torch.Tensor, orbit_index: list[torch.Tensor]) -> torch.Tensor:
    """S(x): the values of ``x`` [B, D] sorted within each orbit, [B, D] (view-invariant)."""
    parts = [x[:, idx.to(x.device)].sort(-1).values.reshape(x.shape[0], -1) for idx in orbit_index]
    return torch.cat(parts, 1)


class CoarseStage(NamedTuple):
    """What bounds the items' distances: orbits, the projection and the items' bound vectors."""
    orbit_index: list[torch.Tensor]
    mean: torch.Tensor      # [D]
    axes: torch.Tensor      # [m, D], orthonormal rows
    items: torch.Tensor     # [N, m + 1]: projection and residual norm of each item
    items_sq: torch.Tensor  # [N] squared norms of ``items``

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] features (any one view) -> [B, m + 1] bound vectors."""
        c = orbit_sort(x, self.orbit_index) - self.mean
        p = c @ self.axes.T
        r = (c - p @ self.axes).norm(dim=1, keepdim=True)
        return torch.cat([p, r], 1)


def fit_coarse(features: torch.Tensor, perms: torch.Tensor, dims: int = COARSE_DIMS
               ) -> CoarseStage:
    """The coarse stage of an index: principal axes (:func:`fit_pca`, at most 2000 items) of
    the items' orbit-sorted features, re-orthonormalised in float64 so that the projection is
    a contraction to float precision."""
    from .features import fit_pca

    idx = orbits(perms)
    s = orbit_sort(features, idx)
    st = fit_pca(s, dims)
    axes = torch.linalg.qr(st["pca_axes"].double().T).Q.T.to(features.dtype).to(features.device)
    stage = CoarseStage(idx, st["pca_mean"].to(features), axes, features[:0], features[:0, 0])
    items = stage.embed(features)
    return stage._replace(items=items, items_sq=(items.double() ** 2).sum(1).to(items.dtype))


def views_match(q: torch.Tensor, perms: torch.Tensor) -> bool:
    """Whether queries [Q, V, D] are their first view under the permutations (then the bound
    holds); the two-stage search is used only then."""
    p = perms.to(q.device)
    return q.shape[1] == p.shape[0] and torch.equal(q, q[:, 0][:, p])


def rerank(qv: torch.Tensor, features: torch.Tensor, features_sq: torch.Tensor,
           cand: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Exact squared distances [B, P] of queries' views ``qv`` [B, V, D] to candidate items
    ``cand`` [B, P] (nearest view), by the same expansion as the exhaustive search, ``chunk``
    queries at a time (their candidates' features gathered: chunk x P x D numbers)."""
    out = []
    for i0 in range(0, qv.shape[0], chunk):
        q, c = qv[i0:i0 + chunk], cand[i0:i0 + chunk]
        f = features[c]                                       # [b, P, D]
        d = torch.baddbmm(features_sq[c][:, None], q, f.transpose(1, 2), beta=1, alpha=-2)
        d.add_((q * q).sum(2, keepdim=True)).clamp_min_(0)
        out.append(d.amin(1))
    return torch.cat(out)


def tolerance(qv: torch.Tensor, features_sq: torch.Tensor) -> torch.Tensor:
    """[B, 1] slack for float rounding when a bound is compared with an exact distance: a few
    float32 ulps of the terms of the expansion |q|² + |f|² - 2 q·f."""
    scale = (qv[:, 0] * qv[:, 0]).sum(1, keepdim=True) + features_sq.max()
    return 64 * torch.finfo(qv.dtype).eps * scale
