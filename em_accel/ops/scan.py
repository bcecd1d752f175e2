"""Scan-path sampling and rasterisation as torch ops, and their references (thesis ch. 4-5).

Coordinates: a probe position is (row, col) in pixels, continuous; pixel (i, j) is the unit
square [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5). ``nearest`` reads the pixel
containing the position, ``bilinear`` interpolates between pixel centres. Off-image positions
read the nearest edge pixel (coordinates are clamped to the image), the rule of the thesis's
adaptive-scan environment, which clips to [0, side - 1] and truncates; callers that want to
penalise such probes do so themselves (see :class:`em_accel.scan.AdaptiveScanEnv`).

Data flow: ``scan_sample`` -> ``em_accel::scan_sample`` -> ``_native.scan.sample_{cpu,cuda}``
-> ``scan::sample_cpu``/``sample_kernel`` -> ``scan::sample_probe`` (csrc/scan/scan.h).
``scan_rasterize`` -> ``em_accel::scan_rasterize`` -> ``_native.scan.rasterize_*`` ->
``scan::nearest_in_column`` / ``nearest_in_row`` (exact Euclidean nearest-neighbour infill).
"""
from __future__ import annotations

import enum
import math
from typing import NamedTuple

import torch

from .. import _native
from ..errors import expect_number
from ._common import (DTYPE_CODES, FLOAT_DTYPES, accumulate_dtype, check_same_device, check_tensor,
                      launch, native_op, verify_enum)
from . import _validate
from ._registry import OpSpec

_MASK64 = (1 << 64) - 1


class SampleMode(enum.IntEnum):
    """How a probe reads the image; mirrors em::scan::Mode (checked at import)."""

    NEAREST = 0
    BILINEAR = 1


verify_enum(SampleMode, _native.scan.Mode)


class Raster(NamedTuple):
    """A partial scan rasterised onto the pixel grid ([B, H, W] each)."""

    image: torch.Tensor     # mean probe value per pixel, 0 where no probe landed
    mask: torch.Tensor      # 1 where at least one probe landed, else 0 (image dtype)
    infilled: torch.Tensor  # image with each empty pixel set to its nearest probed pixel's value
    counts: torch.Tensor    # probes per pixel (image dtype)
    source: torch.Tensor    # int64 flat index h*W + w of the pixel infilled[b, ...] is read from


# ---------------------------------------------------------------------------------------------
# The counter-based generator, in Python integers: the executable spec of scan.h's RNG.

def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _uniform(seed: int, index: int, counter: int) -> float:
    h = _mix64((seed + 0x9E3779B97F4A7C15) & _MASK64)
    h = _mix64(h ^ ((index * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK64))
    h = _mix64(h ^ ((counter * 0x8CB92BA72F3D8DD7 + 0x9E3779B97F4A7C15) & _MASK64))
    return ((h >> 11) + 0.5) * 2.0 ** -53


def _normal(seed: int, index: int, counter: int) -> float:
    u1, u2 = _uniform(seed, index, counter), _uniform(seed, index, counter + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _poisson(lam: float, seed: int, index: int) -> float:
    """Poisson sample: inversion below lam = 10, else Hoermann's PTRS (exact rejection)."""
    if not lam > 0:
        return 0.0
    if lam < 10.0:
        u, k, p = _uniform(seed, index, 0), 0.0, math.exp(-lam)
        cdf = p
        while u > cdf and k < 1000:
            k += 1
            p *= lam / k
            cdf += p
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha, vr = 1.1239 + 1.1328 / (b - 3.4), 0.9277 - 3.6224 / (b - 2.0)
    for it in range(64):
        u = _uniform(seed, index, 2 * it) - 0.5
        v = _uniform(seed, index, 2 * it + 1)
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return float(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - math.lgamma(k + 1.0)):
            return float(k)
    return max(0.0, math.floor(lam + slam * _normal(seed, index, 128) + 0.5))


def noise_reference(values: torch.Tensor, seed: int, counts_per_intensity: float,
                    read_noise: float) -> torch.Tensor:
    """The detector model of em_accel::scan_sample applied to clean ``values`` [B, P].

    Probe b*P + p gets v <- Poisson(c * max(v, 0)) / c with c = counts_per_intensity (if c > 0), then
    v <- v + read_noise * N(0, 1) (if read_noise > 0), from the counter-based generator keyed by
    (seed, b*P + p). Pure Python per element: for tests on small inputs.
    """
    flat = values.detach().double().cpu().reshape(-1).tolist()
    out = []
    for i, v in enumerate(flat):
        if counts_per_intensity > 0:
            v = _poisson(counts_per_intensity * max(v, 0.0), seed, i) / counts_per_intensity
        if read_noise > 0:
            v += read_noise * _normal(seed, i, 256)
        out.append(v)
    return torch.tensor(out, dtype=torch.float64).reshape(values.shape).to(values.device)


# ---------------------------------------------------------------------------------------------
# References (the executable spec), float64-capable, written from the definitions.

def scan_sample_reference(images: torch.Tensor, positions: torch.Tensor, mode: int, seed: int = 0,
                          counts_per_intensity: float = 0.0, read_noise: float = 0.0) -> torch.Tensor:
    """Reference for em_accel::scan_sample; float64-capable and differentiable by autograd."""
    B, H, W = images.shape
    acc = accumulate_dtype(images.dtype)
    img = images.to(acc).reshape(B, H * W)
    y, x = positions[..., 0].to(acc), positions[..., 1].to(acc)
    if SampleMode(mode) == SampleMode.NEAREST:
        iy = torch.nan_to_num(y, nan=0.0).clamp(0, H - 1).floor().long()
        ix = torch.nan_to_num(x, nan=0.0).clamp(0, W - 1).floor().long()
        values = torch.gather(img, 1, iy * W + ix)
    else:
        # Pixel centres at k + 0.5; outside the outermost centres the edge value is replicated.
        def axis(u: torch.Tensor, n: int):
            c = (u - 0.5).clamp(0, n - 1)
            i0 = c.floor().clamp(max=n - 1)
            i1 = (i0 + 1).clamp(max=n - 1)
            return i0.long(), i1.long(), c - i0

        y0, y1, wy = axis(y, H)
        x0, x1, wx = axis(x, W)
        g = lambda iy, ix: torch.gather(img, 1, iy * W + ix)  # noqa: E731
        top = g(y0, x0) * (1 - wx) + g(y0, x1) * wx
        bottom = g(y1, x0) * (1 - wx) + g(y1, x1) * wx
        values = top * (1 - wy) + bottom * wy
    if counts_per_intensity > 0 or read_noise > 0:
        noisy = noise_reference(values, seed, counts_per_intensity, read_noise).to(acc)
        values = values + (noisy - values).detach()  # straight-through, like the native op
    return values


def scan_rasterize_reference(values: torch.Tensor, positions: torch.Tensor, height: int, width: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for em_accel::scan_rasterize (brute-force nearest neighbour; small images).

    Returns (image, counts, infilled, source). Each probe lands in pixel floor(pos) clamped to
    the image; image is the mean of the probes in a pixel. Each pixel of infilled takes the
    image value of the probed pixel at the smallest Euclidean distance, ties broken by the
    smaller column, then the smaller row; source is that pixel's flat index (-1: no probe).
    """
    B, P = values.shape
    hw = height * width
    iy = torch.nan_to_num(positions[..., 0], nan=0.0).clamp(0, height - 1).floor().long()
    ix = torch.nan_to_num(positions[..., 1], nan=0.0).clamp(0, width - 1).floor().long()
    pix = iy * width + ix
    total = torch.zeros(B, hw, dtype=values.dtype, device=values.device).scatter_add(1, pix, values)
    counts = torch.zeros(B, hw, dtype=values.dtype, device=values.device).scatter_add(
        1, pix, torch.ones_like(values))
    image = torch.where(counts > 0, total / counts.clamp(min=1), torch.zeros_like(total))
    rows = torch.arange(height, device=values.device).repeat_interleave(width)
    cols = torch.arange(width, device=values.device).repeat(height)
    d2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2  # [hw, hw]
    key = (d2 * width + cols[None, :]) * height + rows[None, :]  # lexicographic (d2, col, row)
    big = torch.iinfo(torch.int64).max
    source = torch.empty(B, hw, dtype=torch.int64, device=values.device)
    for b in range(B):
        k = torch.where(counts[b][None, :] > 0, key, torch.full_like(key, big))
        best = k.argmin(1)
        source[b] = torch.where(counts[b].sum() > 0, best, torch.full_like(best, -1))
    infilled = torch.where(source >= 0, torch.gather(image, 1, source.clamp(min=0)),
                           torch.zeros_like(image))
    shape = (B, height, width)
    return image.reshape(shape), counts.reshape(shape), infilled.reshape(shape), source.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Checks shared by the real and the fake implementations.

def _check_sample(images, positions, mode, seed, counts_per_intensity, read_noise) -> None:
    check_tensor("images", images, dtypes=FLOAT_DTYPES, ndim=3)
    acc = accumulate_dtype(images.dtype)
    check_tensor("positions", positions, dtypes=(acc,), ndim=3)
    if positions.shape[0] != images.shape[0] or positions.shape[2] != 2:
        raise ValueError(f"positions must have shape [B, P, 2] with B = {images.shape[0]}, "
                         f"got {list(positions.shape)}")
    check_same_device(images=images, positions=positions)
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must have H, W > 0, got shape {list(images.shape)}")
    if max(images.shape[1], images.shape[2]) >= 2 ** 31:
        raise ValueError(f"images must have H, W < 2**31, got shape {list(images.shape)}")
    if mode not in SampleMode._value2member_map_:
        raise ValueError(f"mode must be one of {[int(m) for m in SampleMode]}, got {mode}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if not (math.isfinite(counts_per_intensity) and counts_per_intensity >= 0):
        raise ValueError("counts_per_intensity must be finite and >= 0 (0: no shot noise), "
                         f"got {counts_per_intensity}")
    if not (math.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise must be finite and >= 0, got {read_noise}")


def _sample_params(images, positions, mode, seed, counts_per_intensity, read_noise):
    p = _native.scan.SampleParams()
    p.batch, p.height, p.width = images.shape
    p.probes = positions.shape[1]
    p.mode, p.dtype, p.seed = int(mode), DTYPE_CODES[images.dtype], int(seed)
    p.dose, p.read_noise = float(counts_per_intensity), float(read_noise)
    return p


def _scan_sample_impl(images: torch.Tensor, positions: torch.Tensor, mode: int, seed: int,
                      counts_per_intensity: float, read_noise: float) -> torch.Tensor:
    _check_sample(images, positions, mode, seed, counts_per_intensity, read_noise)
    values = torch.empty(positions.shape[:2], dtype=positions.dtype, device=images.device)
    p = _sample_params(images, positions, mode, seed, counts_per_intensity, read_noise)
    launch(_native.scan, "sample", images.device, p, images.data_ptr(), positions.data_ptr(),
           values.data_ptr(), op="em_accel::scan_sample")
    return values


@native_op("em_accel::scan_sample")
def scan_sample_op(images: torch.Tensor, positions: torch.Tensor, mode: int, seed: int,
                   counts_per_intensity: float, read_noise: float) -> torch.Tensor:
    """Sample images [B, H, W] at positions [B, P, 2]; see scan_sample."""
    return _scan_sample_impl(images, positions, mode, seed, counts_per_intensity, read_noise)


@scan_sample_op.register_fake
def _(images, positions, mode, seed, counts_per_intensity, read_noise):
    _check_sample(images, positions, mode, seed, counts_per_intensity, read_noise)
    return positions.new_empty(positions.shape[:2])


@native_op("em_accel::scan_sample_bwd")
def scan_sample_bwd(grad_values: torch.Tensor, images: torch.Tensor, positions: torch.Tensor,
                    mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of scan_sample: (d/d images [B, H, W] in the image dtype, d/d positions)."""
    _check_sample(images, positions, mode, 0, 0.0, 0.0)
    check_tensor("grad_values", grad_values, dtypes=(positions.dtype,),
                 shape=tuple(positions.shape[:2]))
    check_same_device(grad_values=grad_values, images=images, positions=positions)
    grad_images = torch.empty(images.shape, dtype=positions.dtype, device=images.device)
    grad_positions = torch.zeros_like(positions)
    p = _sample_params(images, positions, mode, 0, 0.0, 0.0)
    ptrs = (grad_values.data_ptr(), images.data_ptr(), positions.data_ptr(),
            grad_images.data_ptr(), grad_positions.data_ptr())
    launch(_native.scan, "sample_backward", images.device, p, *ptrs,
           op="em_accel::scan_sample_bwd")
    return grad_images.to(images.dtype), grad_positions


@scan_sample_bwd.register_fake
def _(grad_values, images, positions, mode):
    return torch.empty_like(images), torch.empty_like(positions)


def _sample_setup(ctx, inputs, output):
    images, positions, mode = inputs[:3]
    ctx.mode = mode
    ctx.save_for_backward(images, positions)


def _sample_backward(ctx, grad_values):
    images, positions = ctx.saved_tensors
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return (None,) * 6
    gi, gp = scan_sample_bwd(grad_values.contiguous(), images, positions, ctx.mode)
    return (gi if ctx.needs_input_grad[0] else None,
            gp if ctx.needs_input_grad[1] else None, None, None, None, None)


scan_sample_op.register_autograd(_sample_backward, setup_context=_sample_setup)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("double backward of em_accel scan ops is not supported")


scan_sample_bwd.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


def _check_raster(values, positions, height, width) -> None:
    check_tensor("values", values, dtypes=(torch.float32, torch.float64), ndim=2)
    check_tensor("positions", positions, dtypes=(values.dtype,), ndim=3)
    if tuple(positions.shape) != (*values.shape, 2):
        raise ValueError(f"positions must have shape [B, P, 2] = {[*values.shape, 2]}, "
                         f"got {list(positions.shape)}")
    check_same_device(values=values, positions=positions)
    if not (height > 0 and width > 0):
        raise ValueError(f"shape must be positive (height, width), got ({height}, {width})")
    if height * width >= 2 ** 31:
        raise ValueError(f"height * width must be < 2**31, got {height * width}")


@native_op("em_accel::scan_rasterize")
def scan_rasterize_op(values: torch.Tensor, positions: torch.Tensor, height: int, width: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterise probes to (image, counts, infilled, source); see scan_rasterize."""
    _check_raster(values, positions, height, width)
    B, dev, dt = values.shape[0], values.device, values.dtype
    image = torch.empty((B, height, width), dtype=dt, device=dev)
    counts, infilled = torch.empty_like(image), torch.empty_like(image)
    source = torch.empty((B, height, width), dtype=torch.int64, device=dev)
    nearest = torch.empty((B, height, width), dtype=torch.int32, device=dev)
    env_v = torch.empty_like(nearest)
    env_z = torch.empty((B, height, width + 1), dtype=torch.float64, device=dev)
    p = _native.scan.RasterParams()
    p.batch, p.height, p.width, p.probes = B, height, width, values.shape[1]
    p.dtype = DTYPE_CODES[dt]
    ptrs = (values.data_ptr(), positions.data_ptr(), image.data_ptr(), counts.data_ptr(),
            infilled.data_ptr(), source.data_ptr(), nearest.data_ptr(), env_v.data_ptr(),
            env_z.data_ptr())
    launch(_native.scan, "rasterize", dev, p, *ptrs, op="em_accel::scan_rasterize")
    return image, counts, infilled, source


@scan_rasterize_op.register_fake
def _(values, positions, height, width):
    _check_raster(values, positions, height, width)
    image = values.new_empty((values.shape[0], height, width))
    return image, torch.empty_like(image), torch.empty_like(image), image.new_empty(
        image.shape, dtype=torch.int64)


@native_op("em_accel::scan_rasterize_bwd")
def scan_rasterize_bwd(grad_image: torch.Tensor, grad_infilled: torch.Tensor,
                       positions: torch.Tensor, counts: torch.Tensor, source: torch.Tensor
                       ) -> torch.Tensor:
    """Gradient of scan_rasterize's image and infilled outputs with respect to the values."""
    _validate.raster_backward(grad_image, grad_infilled, positions, counts, source)
    check_same_device(grad_image=grad_image, grad_infilled=grad_infilled, positions=positions,
                      counts=counts, source=source)
    for name, t in (("grad_image", grad_image), ("grad_infilled", grad_infilled)):
        check_tensor(name, t, dtypes=(counts.dtype,), shape=tuple(counts.shape))
    B, H, W = counts.shape
    grad_values = positions.new_empty(positions.shape[:2])
    pixel_grad = torch.empty_like(counts)
    p = _native.scan.RasterParams()
    p.batch, p.height, p.width, p.probes = B, H, W, positions.shape[1]
    p.dtype = DTYPE_CODES[counts.dtype]
    ptrs = (grad_image.data_ptr(), grad_infilled.data_ptr(), positions.data_ptr(),
            counts.data_ptr(), source.data_ptr(), pixel_grad.data_ptr(), grad_values.data_ptr())
    launch(_native.scan, "rasterize_backward", counts.device, p, *ptrs,
           op="em_accel::scan_rasterize_bwd")
    return grad_values


@scan_rasterize_bwd.register_fake
def _(grad_image, grad_infilled, positions, counts, source):
    return positions.new_empty(positions.shape[:2])


def _raster_setup(ctx, inputs, output):
    _, positions, _, _ = inputs
    _, counts, _, source = output
    ctx.save_for_backward(positions, counts, source)
    ctx.mark_non_differentiable(counts, source)


def _raster_backward(ctx, grad_image, _grad_counts, grad_infilled, _grad_source):
    positions, counts, source = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    zeros = torch.zeros_like(counts)
    gi = zeros if grad_image is None else grad_image.contiguous()
    gf = zeros if grad_infilled is None else grad_infilled.contiguous()
    return scan_rasterize_bwd(gi, gf, positions, counts, source), None, None, None


scan_rasterize_op.register_autograd(_raster_backward, setup_context=_raster_setup)
scan_rasterize_bwd.register_autograd(_no_double_backward,
                                     setup_context=lambda ctx, inputs, output: None)


# ---------------------------------------------------------------------------------------------
# Public functions.

def _mode(mode: str | int | SampleMode) -> SampleMode:
    if isinstance(mode, str):
        try:
            return SampleMode[mode.upper()]
        except KeyError:
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}") from None
    return SampleMode(mode)


def scan_sample(images: torch.Tensor, positions: torch.Tensor, mode: str = "nearest", *,
                counts_per_intensity: float | None = None, read_noise: float = 0.0,
                seed: int = 0) -> torch.Tensor:
    """Read images at probe positions, optionally with shot and detector noise, natively.

    Args:
        images: [B, H, W] float32/float64/float16/bfloat16 intensities (CPU or CUDA).
        positions: [B, P, 2] probe positions (row, col) in pixels; pixel (i, j) spans
            [i, i+1) x [j, j+1). Cast to float32 (float64 for float64 images). Off-image
            positions read the nearest edge pixel.
        mode: "nearest" (the pixel containing the position) or "bilinear" (between centres).
        counts_per_intensity: shot noise [counts per unit intensity]: each value v becomes
            Poisson(c * max(v, 0)) / c with c = counts_per_intensity. None or 0: no shot noise.
        read_noise: standard deviation of additive Gaussian detector noise (intensity units).
        seed: seed of the counter-based generator; probe (b, p) draws from (seed, b*P + p), so
            results are reproducible and identical on CPU and GPU up to libm rounding.

    Returns:
        values [B, P] float32 (float64 for float64 images). Differentiable with respect to
        images, and to positions in bilinear mode (nearest: zero gradient); noise passes the
        gradient straight through.
    """
    check_tensor("images", images, dtypes=FLOAT_DTYPES, ndim=3, contiguous=False)
    check_tensor("positions", positions, ndim=3, contiguous=False)
    acc = accumulate_dtype(images.dtype)
    if not positions.is_floating_point():
        raise TypeError(f"positions must be a floating-point tensor, got {positions.dtype}")
    seed = expect_number("seed", seed, 0, 2**63 - 1, integer=True)
    args = (images.contiguous(), positions.to(acc).contiguous(), int(_mode(mode)), seed,
            float(counts_per_intensity or 0.0), float(read_noise))
    if (torch.is_grad_enabled() and (images.requires_grad or positions.requires_grad)) or \
            torch.compiler.is_compiling():
        return scan_sample_op(*args)
    # No autograd and no tracing: skip the dispatcher (tens of microseconds per call).
    return _scan_sample_impl(*args)


def scan_rasterize(values: torch.Tensor, positions: torch.Tensor, shape: tuple[int, int]) -> Raster:
    """Rasterise probe values onto an image grid with nearest-neighbour infill, natively.

    Args:
        values: [B, P] float32/float64 probe values.
        positions: [B, P, 2] (row, col) in pixels (cast to values' dtype); each probe lands in
            pixel floor(pos), clamped to the image.
        shape: (H, W) of the output images.

    Returns:
        Raster(image, mask, infilled, counts, source), each [B, H, W]. ``image`` is the mean of
        the probes in each pixel (repeat visits averaged, as in the thesis), ``infilled`` gives
        every empty pixel the value of the nearest probed pixel (Euclidean; ties to the smaller
        column, then row), which the thesis found lowers completion error. image and infilled
        are differentiable with respect to values.
    """
    check_tensor("values", values, dtypes=(torch.float32, torch.float64), ndim=2, contiguous=False)
    check_tensor("positions", positions, ndim=3, contiguous=False)
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape}")
    image, counts, infilled, source = scan_rasterize_op(
        values.contiguous(), positions.to(values.dtype).contiguous(), int(shape[0]), int(shape[1]))
    return Raster(image, (counts > 0).to(image.dtype), infilled, counts, source)


def sample_inputs(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  requires_grad: bool = False, batch: int = 3, shape: tuple[int, int] = (9, 11),
                  probes: int = 40, mode: int = int(SampleMode.BILINEAR), seed: int = 0) -> tuple:
    """Arguments for em_accel::scan_sample: random images and positions, some off the image.

    Shared by the tests and the benchmark.
    """
    g = torch.Generator().manual_seed(seed)
    H, W = shape
    images = torch.rand((batch, H, W), generator=g, dtype=torch.float64)
    pos = torch.rand((batch, probes, 2), generator=g, dtype=torch.float64)
    pos = pos * torch.tensor([H + 2.0, W + 2.0], dtype=torch.float64) - 1.0  # 1 px margin outside
    images = images.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    pos = pos.to(device=device, dtype=accumulate_dtype(dtype)).requires_grad_(
        requires_grad and mode == int(SampleMode.BILINEAR))
    return images, pos, mode, 0, 0.0, 0.0


def raster_inputs(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  requires_grad: bool = False, batch: int = 2, shape: tuple[int, int] = (7, 9),
                  probes: int = 12, seed: int = 0) -> tuple:
    """Arguments for em_accel::scan_rasterize: sparse probes, some in the same pixel."""
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    g = torch.Generator().manual_seed(seed)
    H, W = shape
    values = torch.randn((batch, probes), generator=g, dtype=torch.float64)
    pos = torch.rand((batch, probes, 2), generator=g, dtype=torch.float64)
    pos = pos * torch.tensor([float(H), float(W)], dtype=torch.float64)
    pos[:, -1] = pos[:, 0] + 0.01  # a repeat visit
    return (values.to(device=device, dtype=dtype).requires_grad_(requires_grad),
            pos.to(device=device, dtype=dtype), H, W)


OP_SPECS = [
    OpSpec("scan_sample", scan_sample_reference, sample_inputs, True, "scan"),
    OpSpec("scan_rasterize", scan_rasterize_reference, raster_inputs, True, "scan"),
]
