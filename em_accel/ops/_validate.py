"""Value checks the native kernels rely on: index tensors in range, scalars finite and bounded.

``_common.check_tensor`` checks kinds (dtype, shape, device); this module checks contents that
would make a kernel read or write out of bounds or loop for ever. Each index check is one
vectorised pass with one device-to-host transfer; it is skipped on fake/meta tensors (no data).
Internal callers that built the index tensors themselves pass ``check=False`` to the op (the
t-SNE loop calls the attractive pass a thousand times on one CSR it validated once).
"""
from __future__ import annotations


import torch

from ..errors import InvalidIndexError, OutOfRangeError, expect_number, expect_type

#: Largest aperture frequency index the propagator's band search handles exactly (kc / step).
_MAX_BAND_INDEX = 2.0 ** 52


def _has_data(*tensors: torch.Tensor) -> bool:
    """False for meta and fake tensors (torch.compile tracing, opcheck): nothing to read."""
    from torch._subclasses.fake_tensor import is_fake

    return all(t.device.type != "meta" and not is_fake(t) for t in tensors)


def _any(*flags: torch.Tensor) -> list[bool]:
    """The flags (0-d bool tensors) as Python bools, in one transfer."""
    return [bool(v) for v in torch.stack([f.reshape(()) for f in flags]).tolist()]


def offsets_and_species(offsets: torch.Tensor, species: torch.Tensor, num_atoms: int,
                        num_species: int) -> None:
    """Raise InvalidIndexError unless ``offsets`` [M + 1] is a valid partition of [0, num_atoms)
    (offsets[0] >= 0, non-decreasing, offsets[-1] <= num_atoms) and every ``species`` entry is in
    [0, num_species)."""
    if not _has_data(offsets, species):
        return
    off = offsets.to(torch.int64)
    flags = [off[0] < 0, off[-1] > num_atoms,
             (off[1:] < off[:-1]).any() if off.numel() > 1 else torch.zeros((), dtype=torch.bool)]
    if species.numel():
        flags += [species.min() < 0, species.max() >= num_species]
    bad = _any(*[f.to(species.device) for f in flags])
    if bad[0] or bad[1]:
        raise InvalidIndexError(f"offsets must lie in [0, N = {num_atoms}] (atoms per slice), got "
                                f"first {int(off[0])}, last {int(off[-1])}")
    if bad[2]:
        at = int(torch.nonzero(off[1:] < off[:-1])[0])
        raise InvalidIndexError(f"offsets must be non-decreasing, got offsets[{at}] = "
                                f"{int(off[at])} > offsets[{at + 1}] = {int(off[at + 1])}")
    if species.numel() and (bad[3] or bad[4]):
        raise InvalidIndexError(f"species entries must be in [0, {num_species}) (the number of "
                                f"species), got [{int(species.min())}, {int(species.max())}]")


def csr(indptr: torch.Tensor, indices: torch.Tensor, n: int) -> None:
    """Raise InvalidIndexError unless (indptr [n + 1], indices [nnz]) is a CSR matrix with n
    columns: indptr[0] == 0, non-decreasing, indptr[n] == nnz, indices in [0, n)."""
    if not _has_data(indptr, indices):
        return
    nnz = indices.numel()
    flags = [indptr[0] != 0, indptr[-1] != nnz,
             (indptr[1:] < indptr[:-1]).any() if n > 0 else torch.zeros((), dtype=torch.bool,
                                                                          device=indptr.device)]
    if nnz:
        flags += [indices.min() < 0, indices.max() >= n]
    bad = _any(*[f.to(indptr.device) for f in flags])
    if bad[0] or bad[1]:
        raise InvalidIndexError(f"indptr must run from 0 to len(indices) = {nnz}, got "
                                f"{int(indptr[0])} .. {int(indptr[-1])}")
    if bad[2]:
        raise InvalidIndexError("indptr must be non-decreasing (row i holds entries "
                                "indptr[i] .. indptr[i + 1] - 1)")
    if nnz and (bad[3] or bad[4]):
        raise InvalidIndexError(f"indices must be column numbers in [0, {n}), got "
                                f"[{int(indices.min())}, {int(indices.max())}]")


def index_range(name: str, index: torch.Tensor, low: int, high: int) -> None:
    """Raise InvalidIndexError unless every entry of ``index`` is in [low, high)."""
    if not index.numel() or not _has_data(index):
        return
    lo, hi = torch.stack([index.min(), index.max()]).tolist()
    if lo < low or hi >= high:
        raise InvalidIndexError(f"{name} entries must be in [{low}, {high}), got [{lo}, {hi}]")


def propagate_scalars(nx: int, ny: int, dx: float, dy: float, wavelength: float, dz: float,
                      kc: float, taper: float) -> None:
    """Bounds of em_accel::ms_propagate's scalars.

    Sampling in (0, 1e6] Å, wavelength in (0, 1e3] Å (electrons from 1 eV up), |dz| <= 1e10 Å,
    kc and taper finite, and the aperture radius at most 2**52 frequency steps on each axis: the
    kernel's band search counts frequency indices in 64-bit integers (kc = 1e300 or dy = 1e300
    overflowed them and the search never ended). An aperture wider than the grid's largest
    frequency is no aperture: pass kc <= 0 for none.
    """
    expect_number("dx", dx, 0.0, 1e6, unit="Å", low_open=True)
    expect_number("dy", dy, 0.0, 1e6, unit="Å", low_open=True)
    expect_number("wavelength", wavelength, 0.0, 1e3, unit="Å", low_open=True)
    expect_number("dz", dz, -1e10, 1e10, unit="Å")
    expect_number("kc", kc, unit="1/Å")
    expect_number("taper", taper, unit="1/Å")
    if kc > 0:
        limit = _MAX_BAND_INDEX / (max(nx * dx, ny * dy, 1e-300))
        if kc > limit:
            raise OutOfRangeError(f"kc must be at most {limit:.3g} 1/Å for this grid ({nx} x {ny} "
                                  f"at {dx:g} x {dy:g} Å; kc <= 0: no aperture), got {kc!r}")


def raster_backward(grad_image: torch.Tensor, grad_infilled: torch.Tensor,
                    positions: torch.Tensor, counts: torch.Tensor, source: torch.Tensor) -> None:
    """Arguments of em_accel::scan_rasterize_bwd: the forward's counts [B, H, W] and source
    (int64, entries in [-1, H * W)), positions [B, P, 2] of the counts' dtype, gradients shaped
    like counts."""
    from ._common import check_tensor

    check_tensor("counts", counts, dtypes=(torch.float32, torch.float64), ndim=3)
    shape = tuple(counts.shape)
    for name, t in (("grad_image", grad_image), ("grad_infilled", grad_infilled)):
        check_tensor(name, t, dtypes=(counts.dtype,), shape=shape)
    check_tensor("source", source, dtypes=(torch.int64,), shape=shape)
    check_tensor("positions", positions, dtypes=(counts.dtype,), ndim=3)
    if positions.shape[0] != shape[0] or positions.shape[2] != 2:
        raise InvalidIndexError(f"positions must have shape [B = {shape[0]}, P, 2], got "
                                f"{list(positions.shape)}")
    index_range("source", source, -1, shape[1] * shape[2])


def alrc_backward(pred: torch.Tensor, target: torch.Tensor, kind: int, kinds) -> None:
    """Arguments of em_accel::alrc_fused_bwd besides the loss-shaped ones: pred (a float
    tensor with at least one dim), target of pred's dtype and shape, kind one of ``kinds``."""
    from ._common import FLOAT_DTYPES, check_tensor

    check_tensor("pred", pred, dtypes=FLOAT_DTYPES, min_ndim=1)
    check_tensor("target", target, dtypes=(pred.dtype,), shape=tuple(pred.shape))
    if kind not in kinds:
        raise OutOfRangeError(f"kind must be one of {sorted(kinds)}, got {kind}")


def tensors(**named: object) -> None:
    """Raise InvalidTypeError unless every argument is a torch.Tensor (wrappers call this
    before touching ``.contiguous()`` or ``.shape``)."""
    for name, value in named.items():
        expect_type(name, value, torch.Tensor)


def integers(**named: object) -> None:
    """Raise InvalidTypeError/OutOfRangeError unless every argument is an integer in
    [0, 2**62] (grid sizes and counts the wrappers convert with int())."""
    for name, value in named.items():
        expect_number(name, value, 0, 2**62, integer=True)
