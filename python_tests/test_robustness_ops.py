"""Inputs that once crashed or hung the native ops now raise named exceptions.

Each case runs in a child process with a timeout, so a segfault or an endless loop fails the
test instead of killing pytest. The cases are the four found by a first mutation-fuzz pass
(offsets shifted outside the atom arrays, a CSR out of range, dy or kc = 1e300) plus their
siblings (species out of range, indptr that disagrees with indices), and those found by
``python -m bench fuzz``: meta tensors handed to the in-place wrappers (null data pointer),
scan_rasterize_bwd with out-of-range sources (segfault), and backward ops reading past
inputs smaller than the forward's (silent out-of-bounds reads).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from em_accel.errors import InvalidIndexError, InvalidInputError, OutOfRangeError
from em_accel.ops import multislice as M
from em_accel.ops import tsne as T

CHILD = textwrap.dedent("""
    import sys, torch
    from em_accel.ops import multislice as M, tsne as T

    def sf(shift=0, species=0):
        a = list(M.sample_structure_factor()); a[2] = a[2] + shift; a[1] = a[1] + species
        return torch.ops.em_accel.ms_structure_factor(*a)

    def dep(shift=0, species=0):
        a = list(M.sample_deposit()); a[2] = a[2] + shift; a[1] = a[1] + species
        return torch.ops.em_accel.ms_deposit(*a)

    def att(idx_scale=1, ptr_scale=1):
        a = list(T._sample_attractive()); a[2] = a[2] * idx_scale; a[1] = a[1] * ptr_scale
        return torch.ops.em_accel.tsne_attractive(*a)

    def prop(**kw):
        a = list(M.sample_propagate())
        for i, k in ((3, "dy"), (6, "kc"), (7, "taper")):
            a[i] = kw.get(k, a[i])
        return torch.ops.em_accel.ms_propagate(*a)

    def prop_inplace():
        spec, tilt, dx, dy, lam, dz, kc, taper = M.sample_propagate()
        return M.propagate_(spec, dx, 1e300, lam, dz, kc, taper, tilt)

    def propagate_meta():
        spec, tilt, dx, dy, lam, dz, kc, taper = M.sample_propagate()
        return M.propagate_(spec.to("meta"), dx, dy, lam, dz, kc, taper, tilt.to("meta"))

    def raster_bwd():
        from em_accel.ops import scan as S
        values, pos, h, w = S.raster_inputs()
        image, counts, infilled, source = S.scan_rasterize_op(values, pos, h, w)
        return torch.ops.em_accel.scan_rasterize_bwd(torch.ones_like(image), torch.ones_like(image),
                                                     pos, counts, source * 100000)

    def alrc_bwd():
        from em_accel.ops import alrc as A
        pred, target, mu1, mu2, n_up, n_down, decay, kind, pp = A.sample_inputs()
        loss, scale, _, _ = A.alrc_fused(pred, target, mu1, mu2, n_up, n_down, decay, kind, pp)
        return torch.ops.em_accel.alrc_fused_bwd(torch.ones_like(loss), pred,
                                                 target[:1].contiguous(), scale, kind, pp)

    def sample_bwd():
        from em_accel.ops import scan as S
        images, pos, mode, *_ = S.sample_inputs()
        pos = pos[:1].contiguous()  # one batch of positions for three images
        return torch.ops.em_accel.scan_sample_bwd(torch.ones(pos.shape[:2]), images, pos, mode)

    CASES = {
        "propagate_meta_tensor": propagate_meta,
        "rasterize_bwd_source_out_of_range": raster_bwd,
        "alrc_bwd_target_shorter_than_pred": alrc_bwd,
        "sample_bwd_fewer_positions_than_images": sample_bwd,
        "sf_offsets_negative": lambda: sf(shift=-1000),
        "sf_offsets_past_end": lambda: sf(shift=1000),
        "sf_species_out_of_range": lambda: sf(species=7),
        "deposit_offsets_negative": lambda: dep(shift=-1000),
        "deposit_species_out_of_range": lambda: dep(species=100000),
        "attractive_indices_out_of_range": lambda: att(idx_scale=100000),
        "attractive_indptr_disagrees": lambda: att(ptr_scale=1000),
        "propagate_dy_1e300": lambda: prop(dy=1e300),
        "propagate_kc_1e300": lambda: prop(kc=1e300, taper=0.0),
        "propagate_inplace_dy_1e300": prop_inplace,
    }
    for name in sys.argv[1:]:
        try:
            CASES[name]()
            print(name, "returned", flush=True)
        except Exception as e:
            print(name, type(e).__name__, flush=True)
""")

EXPECTED = {
    "propagate_meta_tensor": "InvalidInputError",
    "rasterize_bwd_source_out_of_range": "InvalidIndexError",
    "alrc_bwd_target_shorter_than_pred": "ValueError",
    "sample_bwd_fewer_positions_than_images": "ValueError",
    "sf_offsets_negative": "InvalidIndexError",
    "sf_offsets_past_end": "InvalidIndexError",
    "sf_species_out_of_range": "InvalidIndexError",
    "deposit_offsets_negative": "InvalidIndexError",
    "deposit_species_out_of_range": "InvalidIndexError",
    "attractive_indices_out_of_range": "InvalidIndexError",
    "attractive_indptr_disagrees": "InvalidIndexError",
    "propagate_dy_1e300": "OutOfRangeError",
    "propagate_kc_1e300": "OutOfRangeError",
    "propagate_inplace_dy_1e300": "OutOfRangeError",
}


def test_former_crashes_raise_named_errors_in_a_child_process():
    proc = subprocess.run([sys.executable, "-c", CHILD, *EXPECTED], capture_output=True,
                          text=True, timeout=240)
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert proc.returncode == 0, (f"child died with {proc.returncode} after {list(got)}:\n"
                                  f"{proc.stderr[-2000:]}")
    assert got == EXPECTED


def test_valid_inputs_still_pass_and_check_false_skips_the_pass():
    args = M.sample_structure_factor()
    torch.testing.assert_close(M.ms_structure_factor(*args), M.ms_structure_factor(*args, check=False))
    y, indptr, indices, values, kl = T._sample_attractive()
    f1, _ = T.tsne_attractive(y, indptr, indices, values, kl)
    f2, _ = T.tsne_attractive(y, indptr, indices.to(torch.int32), values, kl, check=False)
    torch.testing.assert_close(f1, f2)


def test_errors_are_value_errors_naming_the_argument():
    pos, sp, off, ff, nx, ny, lx, ly = M.sample_structure_factor()
    with pytest.raises(ValueError, match="offsets"):
        M.ms_structure_factor(pos, sp, off.flip(0).contiguous(), ff, nx, ny, lx, ly)
    spec, tilt, dx, dy, lam, dz, kc, taper = M.sample_propagate()
    for bad in (dict(dx=float("nan")), dict(wavelength=-1.0), dict(dz=float("inf"))):
        a = dict(dx=dx, dy=dy, wavelength=lam, dz=dz, kc=kc, taper=taper) | bad
        with pytest.raises(OutOfRangeError, match=next(iter(bad))):
            M.ms_propagate(spec, tilt, **a)
    assert issubclass(InvalidIndexError, InvalidInputError) and issubclass(InvalidInputError, ValueError)
