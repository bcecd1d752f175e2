"""Exact search over all 8 rotations and flips of a query at about a fifth of the cost of
scoring the 8 views one by one, for features that the views permute (raw pixels on a square
grid).

Why it works: the 8 dihedral transforms act on the features as permutation matrices Π_g, a
representation of the dihedral group D4. Changing to a symmetry-adapted orthonormal basis U
(the group's four 1-d irreducible representations A1, A2, B1, B2 and pairs (x_c, y_c) of its
2-d one, E) makes every Π_g block-diagonal: ±1 on each 1-d block and the same 2x2 matrix ρ(g)
on every E pair. So with q~ = Uᵀq and f~ = Uᵀf,

    <Π_g q, f> = Σ_χ χ(g) q~_χ·f~_χ + Σ_ab ρ(g)_ba q~_Ea·f~_Eb,

eight partial inner products per (query, item) pair (four 1-d blocks and the 2x2 matrix
q~_E·f~_Eᵀ) give all eight views' inner products. On a 24x24 grid that is 288 + 4 x 144 = 864
multiply-adds per pair instead of 8 x 576 = 4608. Views come in pairs g, g r² (r² is +1 on the
1-d blocks and -1 on E), so max over views = max over 4 pairs of X_g + |E_g|. Distances are
|q|² + |f|² - 2 max_g <Π_g q, f>, the same numbers as the view-by-view search up to float
rounding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

#: Queries per block: keeps the [block, N] partial products in cache for the elementwise steps.
QUERY_BLOCK = 128


def dihedral_permutations(side: int) -> torch.Tensor:
    """[8, side²] int64: row v maps the flattened ``side`` x ``side`` grid to its v-th dihedral
    transform as :func:`em_accel.embed.features.dihedral_views` orders them
    (``view_v.flatten() == x.flatten()[perm[v]]``; row 0 is the identity)."""
    from .features import dihedral_views

    if not isinstance(side, int) or side < 1:
        raise ValueError(f"side must be a positive int, got {side!r}")
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


def grid_side(perms: torch.Tensor) -> int | None:
    """The side of the square grid if ``perms`` are exactly its 8 dihedral permutations (in
    :func:`dihedral_permutations`' order), else None."""
    side = round(perms.shape[1] ** 0.5)
    if perms.shape[0] == 8 and side * side == perms.shape[1] and side >= 2 \
            and torch.equal(perms, dihedral_permutations(side)):
        return side
    return None


def views_match(q: torch.Tensor, perms: torch.Tensor) -> bool:
    """Whether queries [Q, V, D] are their first view under the permutations."""
    p = perms.to(q.device)
    return q.shape[1] == p.shape[0] and torch.equal(q, q[:, 0][:, p])


class DihedralBasis(NamedTuple):
    u: torch.Tensor           # [D, D] orthonormal columns: A1 | A2 | B1 | B2 | Ex | Ey
    blocks: list[slice]       # the four 1-d blocks' columns
    ex: slice                 # E pairs' x columns (the y columns follow: ``ey``)
    ey: slice
    pairs: list[tuple[torch.Tensor, torch.Tensor]]  # per view pair: (±1 of the 4 1-d blocks,
    #                           coefficients of m_xx, m_xy, m_yx, m_yy for the first view)


def dihedral_basis(side: int) -> DihedralBasis:
    """The symmetry-adapted basis of a ``side`` x ``side`` grid (float64, built and checked
    numerically: every view is block-diagonal in it)."""
    perms = dihedral_permutations(side)
    d = side * side
    eye = torch.eye(d, dtype=torch.float64)
    pi = [eye[perms[k]] for k in range(8)]          # pi[k] @ x == x[perms[k]]
    # view k = s^[k >= 4] r^(k % 4): r a quarter turn, s a transpose; 1-d characters by χ(r), χ(s)
    cols, blocks, start = [], [], 0
    for cr, cs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        proj = sum(cr ** (k % 4) * cs ** (k >= 4) * pi[k] for k in range(8)) / 8
        ev, vec = torch.linalg.eigh(proj)
        b = vec[:, ev > 0.5]
        cols.append(b)
        blocks.append(slice(start, start + b.shape[1]))
        start += b.shape[1]
    p_e = eye - sum(c @ c.T for c in cols)
    ev, vec = torch.linalg.eigh(p_e @ (eye + pi[4]) / 2)   # E vectors fixed by the transpose
    ux = vec[:, ev > 0.5]
    uy = pi[1] @ ux                                          # their quarter turns
    m = ux.shape[1]
    u = torch.cat(cols + [ux, uy], 1)
    if u.shape[1] != d or not torch.allclose(u.T @ u, eye, atol=1e-9):
        raise RuntimeError(f"dihedral basis of a {side}x{side} grid is not orthonormal")
    ex, ey = slice(start, start + m), slice(start + m, start + 2 * m)
    coef = []
    for k in range(8):
        t = u.T @ pi[k] @ u
        c1 = torch.tensor([t[b.start, b.start] for b in blocks]).round()  # ±1
        # <Π q, f> = Σ f~_a T[a, b] q~_b: m_ab = q~_Ea·f~_Eb has coefficient T[Eb, Ea]
        ce = torch.tensor([t[ex.start, ex.start], t[ey.start, ex.start],
                           t[ex.start, ey.start], t[ey.start, ey.start]]).round()  # 0, ±1
        expect = torch.block_diag(*[c1[i] * torch.eye(b.stop - b.start, dtype=torch.float64)
                                    for i, b in enumerate(blocks)],
                                  torch.kron(torch.tensor([[ce[0], ce[2]], [ce[1], ce[3]]]),
                                             torch.eye(m, dtype=torch.float64)))
        if not torch.allclose(t, expect, atol=1e-9):
            raise RuntimeError(f"view {k} is not block-diagonal in the dihedral basis")
        coef.append((c1, ce))
    pairs, used = [], set()
    for k in range(8):
        if k in used:
            continue
        partner = [j for j in range(8) if j != k and j not in used
                   and torch.equal(coef[j][0], coef[k][0]) and torch.equal(coef[j][1], -coef[k][1])]
        if len(partner) != 1:
            raise RuntimeError("dihedral views do not pair up as g, g r²")
        used.update((k, partner[0]))
        pairs.append((coef[k][0].float(), coef[k][1].float()))
    return DihedralBasis(u, blocks, ex, ey, pairs)


class DihedralItems(NamedTuple):
    basis: DihedralBasis
    u: torch.Tensor           # [D, D] in the features' dtype/device
    one_d: list[torch.Tensor]  # per 1-d block: items' coordinates [N, d_block]
    e: torch.Tensor           # [2N, m]: items' E x coordinates, then their y coordinates
    sq: torch.Tensor          # [N] squared norms of the items


def prepare(features: torch.Tensor, side: int) -> DihedralItems:
    """The items' coordinates in the dihedral basis (computed once per index)."""
    basis = dihedral_basis(side)
    u = basis.u.to(features.device, features.dtype)
    ft = features @ u
    one_d = [ft[:, b].contiguous() for b in basis.blocks]
    e = torch.cat([ft[:, basis.ex], ft[:, basis.ey]], 0).contiguous()
    sq = (features.double() ** 2).sum(1).to(features.dtype)
    return DihedralItems(basis, u, one_d, e, sq)


def nearest_view_d2(items: DihedralItems, q: torch.Tensor) -> torch.Tensor:
    """Squared distances [B, N] from queries q [B, D] (one view each) to every item, each item
    scored by the nearest of the query's 8 dihedral views."""
    b, n = q.shape[0], items.sq.shape[0]
    qt = q @ items.u
    parts = [qt[:, blk] @ f.T for blk, f in zip(items.basis.blocks, items.one_d)]   # 4 x [B, N]
    qe = torch.cat([qt[:, items.basis.ex], qt[:, items.basis.ey]], 0)
    mm = qe @ items.e.T                                                              # [2B, 2N]
    m = (mm[:b, :n], mm[:b, n:], mm[b:, :n], mm[b:, n:])       # m_xx, m_xy, m_yx, m_yy
    best = None
    for c1, ce in items.basis.pairs:
        x = _combine(parts, c1)
        e = _combine(m, ce).abs_()
        x.add_(e)
        best = x if best is None else torch.maximum(best, x, out=best)
    d = best.mul_(-2).add_(items.sq[None]).add_((q * q).sum(1, keepdim=True))
    return d.clamp_min_(0)


def _combine(terms, coefs) -> torch.Tensor:
    """Σ c_i t_i over the nonzero coefficients (each ±1 here), as a new tensor."""
    out = None
    for t, c in zip(terms, coefs.tolist()):
        if c == 0:
            continue
        if out is None:
            out = t * c
        else:
            out.add_(t, alpha=c)
    return out
