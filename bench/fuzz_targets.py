"""Entry points the fuzzer calls, each with a small valid call that mutations start from.

A target is a name, the function, and ``base()`` returning fresh (args, kwargs) of a valid,
cheap call (milliseconds on one CPU core). The fuzzer (bench/bench_fuzz.py) replaces one to
three of the arguments with malformed values and records what the call raised.

Covered: every op registered under ``torch.ops.em_accel`` (forward and backward, with the
sample inputs of ``em_accel.ops.OPS``), the Python wrappers of ``em_accel.ops`` (in-place
multislice kernels, ALRC losses, scan sampling and rasterising; the t-SNE force composites of
``em_accel.embed.fft_forces``), and the main public functions of ``em_accel.sim``,
``em_accel.scan``, ``em_accel.embed``, ``em_accel.models`` (``denoise_image``) and
``em_accel.io.read_image`` (malformed files). Bases follow the current signatures: the fuzz
worker runs each unmutated call first and the record lists any that fail.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    fn: Callable
    base: Callable[[], tuple[list, dict]]
    group: str  # "op" (registered native op), "wrapper" (em_accel.ops Python API), "api", "io"


class FileArg(str):
    """A path argument: the fuzzer swaps it for a malformed file."""


def _op(name: str, overload: str = "default") -> Callable:
    return getattr(getattr(torch.ops.em_accel, name), overload)


def _op_targets() -> list[Target]:
    from em_accel.ops import OPS

    out = []
    for spec in OPS:
        out.append(Target(f"op.{spec.name}", _op(spec.name),
                          lambda s=spec: (list(s.sample_inputs("cpu", torch.float32)), {}), "op"))
    return out


def _backward_targets() -> list[Target]:
    from em_accel.ops import alrc as A
    from em_accel.ops import scan as S

    def alrc_bwd():
        pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel = A.sample_inputs()
        loss, scale, _, _ = A.alrc_fused(pred, target, mu1, mu2, n_up, n_down, decay, kind,
                                         per_pixel)
        return [torch.ones_like(loss), pred, target, scale, kind, per_pixel], {}

    def sample_bwd():
        images, pos, mode, *_ = S.sample_inputs()
        return [torch.ones(pos.shape[:2]), images, pos, mode], {}

    def raster_bwd():
        values, pos, h, w = S.raster_inputs()
        image, counts, infilled, source = S.scan_rasterize_op(values, pos, h, w)
        return [torch.ones_like(image), torch.ones_like(image), pos, counts, source], {}

    return [Target("op.alrc_fused_bwd", _op("alrc_fused_bwd"), alrc_bwd, "op"),
            Target("op.scan_sample_bwd", _op("scan_sample_bwd"), sample_bwd, "op"),
            Target("op.scan_rasterize_bwd", _op("scan_rasterize_bwd"), raster_bwd, "op")]


def _wrapper_targets() -> list[Target]:
    import em_accel.ops as O
    from em_accel.ops import multislice as M
    from em_accel.ops import scan as S
    from em_accel.ops import tsne as T

    def propagate_():
        spec, tilt, dx, dy, lam, dz, kc, taper = M.sample_propagate()
        return [spec, dx, dy, lam, dz, kc, taper], {"tilt": tilt, "scale": 0.5}

    def transmit_():
        return list(M.sample_transmit()), {}

    def transmission_out():
        v, sigma = M.sample_transmission()
        return [v, sigma], {"out": torch.empty(v.shape, dtype=torch.complex64)}

    def deposit_into():
        pos, sp, off, s, nx, ny, lx, ly, _ = M.sample_deposit()
        return [pos, sp, off, torch.empty(3, s, nx, ny), lx, ly], {}

    def alrc(kind):
        def base():
            pred, target, mu1, mu2, n_up, n_down, decay, _, _ = O.alrc.sample_inputs()
            return [pred, target, mu1, mu2], {"n_up": n_up, "decay": decay}
        return base

    def scan_sample():
        images, pos, *_ = S.sample_inputs()
        return [images, pos, "bilinear"], {"counts_per_intensity": 10.0, "read_noise": 0.1,
                                           "seed": 3}

    def scan_rasterize():
        values, pos, h, w = S.raster_inputs()
        return [values, pos, (h, w)], {}

    def repulsive(method):
        return lambda: ([T.sample_embedding(60)], {"method": method})

    from em_accel.embed import fft_forces as FF

    def attractive():
        return list(T._sample_attractive())[:4], {"want_kl": True}

    return [
        Target("ops.multislice.propagate_", M.propagate_, propagate_, "wrapper"),
        Target("ops.multislice.transmit_", M.transmit_, transmit_, "wrapper"),
        Target("ops.multislice.transmission", M.transmission, transmission_out, "wrapper"),
        Target("ops.multislice.deposit_into", M.deposit_into, deposit_into, "wrapper"),
        Target("ops.multislice.structure_factor", M.structure_factor,
               lambda: (list(M.sample_structure_factor()), {}), "wrapper"),
        Target("ops.alrc_mse", O.alrc_mse, alrc("mse"), "wrapper"),
        Target("ops.alrc_quartic", O.alrc_quartic, alrc("quartic"), "wrapper"),
        Target("ops.scan_sample", S.scan_sample, scan_sample, "wrapper"),
        Target("ops.scan_rasterize", S.scan_rasterize, scan_rasterize, "wrapper"),
        Target("embed.fft_forces.repulsive_forces[exact]", FF.repulsive_forces, repulsive("exact"),
               "wrapper"),
        Target("embed.fft_forces.repulsive_forces[fft]", FF.repulsive_forces, repulsive("fft"),
               "wrapper"),
        Target("embed.fft_forces.attractive_forces", FF.attractive_forces, attractive, "wrapper"),
    ]


def _api_targets() -> list[Target]:
    import em_accel.embed as E
    import em_accel.scan as SC
    import em_accel.sim as SIM
    from em_accel.models import AtrousDenoiser, denoise_image

    imaging = importlib.import_module("em_accel.sim.imaging")  # modules, not same-named functions
    stem = importlib.import_module("em_accel.sim.stem")

    g = torch.Generator().manual_seed(0)
    model = AtrousDenoiser(width=0.125, depth=1).eval()

    def exit_wave():
        return ["Si"], {"energy": 200.0, "sampling": 0.25, "thickness": 6.0, "zone": (0, 0, 1),
                        "extent": 8.0}

    def grid():
        return SIM.Grid.from_sampling((8.0, 8.0), 0.25)

    def points(n=40, d=5):
        return torch.randn(n, d, generator=g)

    return [
        Target("sim.exit_wave", SIM.exit_wave, exit_wave, "api"),
        Target("sim.wavelength", SIM.wavelength, lambda: ([300.0], {}), "api"),
        Target("sim.interaction_parameter", SIM.interaction_parameter, lambda: ([300.0], {}), "api"),
        Target("sim.slice_thicknesses", SIM.slice_thicknesses, lambda: ([10.0, 2.0], {}), "api"),
        Target("sim.zone_axis", SIM.zone_axis, lambda: (["Si", (1, 1, 0)], {"extent": 8.0,
                                                                           "thickness": 6.0}), "api"),
        Target("sim.plane_wave", SIM.plane_wave, lambda: ([grid()], {"batch": 2}), "api"),
        Target("sim.projected_potential", SIM.projected_potential,
               lambda: ([14, torch.linspace(0.01, 2.0, 16)], {}), "api"),
        Target("sim.imaging.ctf", imaging.ctf, lambda: ([grid(), 300.0], {
            "semiangle_cutoff": 20.0, "focal_spread": 30.0, "angular_spread": 0.5,
            "defocus": 50.0}), "api"),
        Target("sim.imaging.dose_noise", imaging.dose_noise,
               lambda: ([torch.rand(16, 16, generator=g), 100.0, 0.0625], {}), "api"),
        Target("sim.imaging.bin_detector", imaging.bin_detector,
               lambda: ([torch.rand(16, 16, generator=g), 2], {}), "api"),
        Target("sim.stem.incoherent_image", stem.incoherent_image, lambda: (
            [SIM.zone_axis("Si", (0, 0, 1), extent=8.0, thickness=4.0), 200.0],
            {"sampling": 0.25}), "api"),
        Target("sim.stem.annular_mask", stem.annular_mask,
               lambda: ([grid(), 200.0, 10.0, 40.0], {}), "api"),
        Target("scan.make_path", SC.make_path, lambda: (["spiral", (32, 32), 0.1], {"seed": 1}),
               "api"),
        Target("scan.partial_scan", SC.partial_scan, lambda: (
            [torch.rand(2, 24, 24, generator=g), SC.make_path("random", (24, 24), 0.2)],
            {"read_noise": 0.01}), "api"),
        Target("scan.gaussian_blur", SC.gaussian_blur,
               lambda: ([torch.rand(2, 16, 16, generator=g), 5, 1.0], {}), "api"),
        Target("embed.tsne", E.tsne, lambda: ([points()], {"perplexity": 5.0, "n_iter": 30,
                                                           "early_exaggeration_iter": 10}), "api"),
        Target("embed.pca", E.pca, lambda: ([points()], {"n_components": 3}), "api"),
        Target("embed.knn", E.knn, lambda: ([points(), 4], {}), "api"),
        Target("embed.affinities", E.affinities, lambda: ([points()], {"perplexity": 5.0}), "api"),
        Target("embed.uniform_separate", E.uniform_separate,
               lambda: ([torch.randn(50, 2, generator=g)], {"grid": 5}), "api"),
        Target("models.denoise_image", denoise_image, lambda: (
            [model, np.random.default_rng(0).random((40, 36)).astype(np.float32)],
            {"tile": 32, "margin": 4}), "api"),
    ]


def _io_targets() -> list[Target]:
    from em_accel.io import read_image

    return [Target(f"io.read_image[{s}]", read_image, lambda s=s: ([FileArg(s)], {}), "io")
            for s in (".tif", ".mrc", ".npy", ".dm3", ".dm4", ".ser", ".emd", ".png")]


def all_targets(groups: tuple[str, ...] = ("op", "wrapper", "api", "io")) -> list[Target]:
    makers = {"op": lambda: _op_targets() + _backward_targets(), "wrapper": _wrapper_targets,
              "api": _api_targets, "io": _io_targets}
    out: list[Target] = []
    for group in groups:
        out.extend(makers[group]())
    return out


def valid_file(suffix: str, directory: Path, rng: np.random.Generator) -> Path:
    """A small valid file of the format (written by em_accel.io or the format's library)."""
    from em_accel.io import write_image

    data = rng.random((8, 10)).astype(np.float32)
    path = directory / f"valid{rng.integers(1 << 30)}{suffix}"
    if suffix in (".tif", ".mrc", ".npy"):
        return write_image(path, data, pixel_size=0.5, metadata={"fuzz": True})
    if suffix == ".png":
        import imageio.v3 as iio

        iio.imwrite(path, (data * 255).astype(np.uint8))
        return path
    path.write_bytes(rng.bytes(256))  # formats we do not write: random content
    return path


def describe(value: Any) -> str:
    """Short text of a (mutated) argument for the record."""
    if isinstance(value, torch.Tensor):
        extra = "" if value.is_contiguous() or value.layout != torch.strided else f" strides={value.stride()}"
        return f"Tensor({list(value.shape)}, {value.dtype}, {value.device}{extra})"
    if isinstance(value, np.ndarray):
        return f"ndarray({list(value.shape)}, {value.dtype})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
