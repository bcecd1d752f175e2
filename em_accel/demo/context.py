"""The demo's shared inputs (:class:`DemoContext`) and a stage's output (:class:`StageResult`).

Every shared input is simulated lazily, once, the first time a stage asks for it
(``functools.cached_property``), so a stage that needs only the HAADF image never waits for the
HRTEM simulation, and stages that share an input share one simulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

#: A panel image: a 2-D array (drawn in grey scale) or the path of a PNG or HTML file to embed.
PanelImage = Union[np.ndarray, Path, str]

ENERGY_KEV = 300.0
#: HAADF probe semi-angle [mrad]: a ~1.2 Å probe, so the sparse scan sees columns, not dots.
HAADF_PROBE_MRAD = 10.0
#: Fraction of pixels the sparse spiral scan probes.
SCAN_COVERAGE = 0.15


@dataclass
class StageResult:
    """What a stage shows: see the stage contract in :mod:`em_accel.demo`.

    Attributes:
        title: heading of the stage's section.
        panels: (caption, image) pairs; image a 2-D numpy array or a PNG/HTML path.
        numbers: name (with its unit in the name) -> value; errors against the simulated truth
            beside a trivial baseline where there is a truth.
        text: one paragraph: what was done, with which settings.
        seconds: wall time of the stage [s]; filled in by the runner.
    """

    title: str
    panels: list[tuple[str, PanelImage]] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    text: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Specimen:
    """One simulated specimen on an ``n`` x ``n`` grid (rows are x, columns y).

    Attributes:
        name: "crystal" or "nanoparticle"; formula: its chemistry, e.g. "SrTiO3 [001]".
        sampling: pixel size [Å/px].
        exit_wave: complex64 [n, n] exit wave (1 = incident vacuum wave).
        hrtem: float32 [n, n] HRTEM intensity (vacuum = 1) after the objective lens.
        haadf: float32 [n, n] HAADF-STEM image (incoherent approximation), scaled to [0, 1].
        lens: the HRTEM lens settings (defocus [Å], Cs [Å], aperture [mrad], focal spread [Å]).
    """

    name: str
    formula: str
    sampling: float
    exit_wave: np.ndarray
    hrtem: np.ndarray
    haadf: np.ndarray
    lens: dict

    @property
    def amplitude(self) -> np.ndarray:
        """|exit wave|, float32 [n, n]."""
        return np.abs(self.exit_wave).astype(np.float32)

    @property
    def phase(self) -> np.ndarray:
        """arg(exit wave) [rad], float32 [n, n]."""
        return np.angle(self.exit_wave).astype(np.float32)


@dataclass(frozen=True)
class SparseScan:
    """A sparse scan of the nanoparticle's HAADF image (``truth``, float32 [n, n] in [0, 1]).

    Attributes:
        path: the :class:`em_accel.scan.ScanPath` (probe positions (row, col) [px]).
        values: float32 [P] probe values, with shot noise of ``counts_per_intensity``.
        mask: float32 [n, n], 1 where a probe landed.
        infilled: float32 [n, n], nearest-neighbour infill (the completion networks' input).
        coverage: fraction of pixels probed.
    """

    truth: np.ndarray
    path: Any
    values: np.ndarray
    mask: np.ndarray
    infilled: np.ndarray
    coverage: float
    counts_per_intensity: float


@dataclass(frozen=True)
class NoisyFrame:
    """A low-dose HRTEM frame of the crystal.

    Attributes:
        clean: float32 [n, n] expected counts per pixel (the truth).
        noisy: float32 [n, n] Poisson counts per pixel.
        dose_e_per_A2: electron dose [e⁻/Å²]; mean_counts_per_px: mean of ``clean`` [counts/px].
    """

    clean: np.ndarray
    noisy: np.ndarray
    dose_e_per_A2: float
    mean_counts_per_px: float


@dataclass(frozen=True)
class Crops:
    """Square crops for a map: ``images`` float32 [N, s, s] (each min-max scaled to [0, 1]),
    ``labels`` int64 [N] indexing ``sources`` (e.g. "crystal HRTEM")."""

    images: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]


@dataclass
class DemoContext:
    """Settings and shared simulated inputs of one demo run (see :mod:`em_accel.demo`).

    Attributes:
        out_dir: where the report, PNGs and files of stages go.
        seed: base seed; stages derive generators with :meth:`generator`.
        device: where tensors are computed (the GPU when present, else CPU).
        progress: show progress (pass on as ``progress=``).
        fast: small sizes and few iterations (tests, a first look).
        extras: intermediate results stages hand to later stages, by name.
    """

    out_dir: Path
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    fast: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.device = torch.device(self.device)

    @property
    def size(self) -> int:
        """Grid points per side of every simulated image [px]."""
        return 128 if self.fast else 256

    @property
    def extent(self) -> float:
        """Field of view per side [Å]."""
        return 24.0 if self.fast else 40.0

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset`` (one offset per use)."""
        return torch.Generator().manual_seed(self.seed + int(offset))

    @cached_property
    def crystal(self) -> Specimen:
        """SrTiO3 along [001], about 40 Å thick."""
        from ..sim import zone_axis

        box = zone_axis("SrTiO3", (0, 0, 1), extent=self.extent, thickness=40.0)
        return _simulate("crystal", "SrTiO3 [001], 40 Å thick", box, self)

    @cached_property
    def nanoparticle(self) -> Specimen:
        """A spherical gold particle (fcc, [001] up) in vacuum, diameter 0.6 of the field."""
        return _simulate("nanoparticle", "Au sphere, [001] along the beam",
                         _gold_sphere(self.extent, 0.3 * self.extent), self)

    @cached_property
    def sparse_scan(self) -> SparseScan:
        """The nanoparticle's HAADF image scanned along a spiral at :data:`SCAN_COVERAGE`, with
        shot noise of 200 counts per unit intensity, rasterised with nearest-neighbour infill."""
        from ..scan import partial_scan, spiral

        truth = self.nanoparticle.haadf
        path = spiral(truth.shape, SCAN_COVERAGE)
        counts = 200.0
        ps = partial_scan(torch.from_numpy(truth), path, counts_per_intensity=counts, seed=self.seed)
        r = ps.raster
        return SparseScan(truth, path, ps.values.numpy(), r.mask.numpy(), r.infilled.numpy(),
                          path.coverage, counts)

    @cached_property
    def noisy_frame(self) -> NoisyFrame:
        """The crystal's HRTEM image with Poisson noise at the electron dose [e⁻/Å²] that
        gives 30 counts per pixel in vacuum."""
        from ..sim.imaging import dose_noise

        spec = self.crystal
        area = spec.sampling ** 2
        dose = 30.0 / area  # e⁻/Å² for ~30 counts/px in vacuum
        img = torch.from_numpy(spec.hrtem).double()
        noisy = dose_noise(img, dose, area, seed=self.seed + 1)
        clean = (img * dose * area).float().numpy()
        return NoisyFrame(clean, noisy.float().numpy(), dose, float(clean.mean()))

    @cached_property
    def crops(self) -> Crops:
        """Random 24 x 24 px crops (48 per image in full runs, 24 fast) of the four simulated
        images: crystal and nanoparticle, HRTEM and HAADF."""
        sources, images = [], []
        for spec in (self.crystal, self.nanoparticle):
            sources += [f"{spec.name} HRTEM", f"{spec.name} HAADF"]
            images += [spec.hrtem, spec.haadf]
        g = np.random.default_rng(self.seed + 2)
        s, per = 24, 24 if self.fast else 48
        crops, labels = [], []
        for k, img in enumerate(images):
            n = img.shape[0]
            for r, c in g.integers(0, n - s, size=(per, 2)):
                crop = img[r:r + s, c:c + s].astype(np.float32)
                lo, hi = crop.min(), crop.max()
                crops.append((crop - lo) / (hi - lo) if hi > lo else np.zeros_like(crop))
                labels.append(k)
        return Crops(np.stack(crops), np.asarray(labels, dtype=np.int64), tuple(sources))


def _gold_sphere(extent: float, radius: float):
    """Au atoms (fcc, a = 4.08 Å) within ``radius`` [Å] of the centre of an ``extent``-wide,
    2 * radius + 4 Å deep box."""
    from ..sim import Structure, zone_axis

    cell = zone_axis("Au", (0, 0, 1))
    reps = int(math.ceil(2 * radius / cell.cell[0])) + 1
    block = cell.repeat(reps, reps, reps)
    centre = np.asarray(block.cell) / 2
    keep = np.linalg.norm(block.positions - centre, axis=1) < radius
    depth = 2 * radius + 4.0
    shift = np.array([extent / 2, extent / 2, depth / 2]) - centre
    return Structure(block.positions[keep] + shift, block.numbers[keep], (extent, extent, depth),
                     {"source": "Au nanoparticle"})


def _simulate(name: str, formula: str, structure, ctx: DemoContext) -> Specimen:
    """Exit wave (multislice, 2 Å slices), HRTEM image and HAADF image of ``structure``."""
    from ..sim import exit_wave
    from ..sim.imaging import image
    from ..sim.stem import incoherent_image
    from ..sim.potential import Grid

    n = ctx.size
    lens = {"defocus": 100.0, "Cs": 1e5, "semiangle_cutoff": 20.0, "focal_spread": 30.0}
    psi = exit_wave(structure, ENERGY_KEV, gpts=(n, n), slice_thickness=2.0, device=ctx.device)
    grid = Grid.from_sampling(structure.cell[:2], gpts=(n, n))
    hrtem = image(psi, grid, ENERGY_KEV, **lens)
    haadf = incoherent_image(structure, ENERGY_KEV, gpts=(n, n), semiangle_cutoff=HAADF_PROBE_MRAD,
                             device=ctx.device)
    haadf = haadf - haadf.min()
    haadf = haadf / haadf.max().clamp_min(1e-12)
    return Specimen(name, formula, grid.sampling[0], psi.cpu().numpy().astype(np.complex64),
                    hrtem.float().cpu().numpy(), haadf.float().cpu().numpy(), lens)
