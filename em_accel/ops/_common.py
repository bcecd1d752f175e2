"""Shared plumbing between torch tensors and em_accel._native: checks, dtype codes, streams.

Inputs are checked here, once, with the argument's name and the value received; the
native launchers trust what they are given (DESIGN rule 7, STYLE §4).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from typing import Callable, Iterable, Iterator

import torch

from .. import _native
from ..errors import InvalidInputError

# Mirrors em::DType in csrc/common/em_common.h; verified against the native enum below.
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
FLOAT_DTYPES = tuple(DTYPE_CODES)
#: The complex dtype of a real one and back (waves, spectra); the one map the package uses.
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
REAL_OF = {c: r for r, c in COMPLEX_OF.items()}


def _verify_dtype_codes() -> None:
    native = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}
    for name, dtype in native.items():
        if int(getattr(_native.DType, name)) != DTYPE_CODES[dtype]:
            raise ImportError(f"em_accel._native.DType.{name} does not match DTYPE_CODES")


_verify_dtype_codes()


def verify_enum(py_enum: type, native_enum: object) -> None:
    """Raise ImportError unless every member of ``py_enum`` has the same value in ``native_enum``.

    Keeps each C++ enum and its Python mirror one source of truth (STYLE §11).
    """
    for member in py_enum:
        if int(getattr(native_enum, member.name)) != int(member):
            raise ImportError(f"{py_enum.__name__}.{member.name} differs between Python and "
                              "em_accel._native")


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the native kernels accumulate and return reductions in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_tensor(name: str, t: object, *, dtypes: Iterable[torch.dtype] | None = None,
                 ndim: int | None = None, min_ndim: int | None = None,
                 shape: tuple[int, ...] | None = None, contiguous: bool = True) -> torch.Tensor:
    """Raise a named TypeError/ValueError unless ``t`` is a tensor of the expected kind."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            allowed = ", ".join(str(d) for d in dtypes)
            raise TypeError(f"{name} must have dtype in ({allowed}), got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {list(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {list(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {t.stride()}")
    return t


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """Raise RuntimeError unless all tensors are on one device, which is CPU or CUDA."""
    devices = {name: t.device for name, t in tensors.items()}
    first_name, first = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != first:
            raise RuntimeError(f"{name} is on {dev} but {first_name} is on {first}; "
                               "move them to one device")
    if first.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"em_accel kernels run on cpu or cuda tensors, got device {first}")
    return first


def require_cuda_build(op: str) -> None:
    if not _native.has_cuda():
        raise RuntimeError(f"{op}: em_accel was built without CUDA; rebuild with EM_ACCEL_CUDA=ON")


@contextlib.contextmanager
def native_stream(device: torch.device, op: str) -> Iterator[int]:
    """Yield the raw handle of the current stream (0 on CPU) with ``device`` made current."""
    if device.type not in ("cpu", "cuda"):  # meta tensors reach here only past the dispatcher
        raise InvalidInputError(f"{op}: the kernel needs cpu or cuda tensors with data, got {device}")
    if device.type != "cuda":
        yield 0
        return
    require_cuda_build(op)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index == torch.cuda.current_device():  # the usual case: no device switch per call
        yield torch.cuda.current_stream(index).cuda_stream
        return
    with torch.cuda.device(index):
        yield torch.cuda.current_stream(index).cuda_stream


#: Reused float64 CUDA workspaces, one per (device index, stream handle), grown on demand.
#: Work on one stream is ordered, so ops on it may share one buffer; a fresh allocation per call
#: cost a caching-allocator round trip in every training step.
_WORKSPACES: dict[tuple[int, int], torch.Tensor] = {}


def cuda_workspace(device: torch.device, stream: int, doubles: int) -> torch.Tensor:
    """A float64 CUDA buffer of at least ``doubles`` (>= 1) elements for kernels on ``stream``.

    Reused across calls in the steady state; while a CUDA graph is being captured a fresh
    buffer is taken from the graph's pool instead (a cached buffer could be freed or regrown
    outside the graph, which would leave the replayed kernels a dangling pointer)."""
    doubles = max(int(doubles), 1)
    if torch.cuda.is_current_stream_capturing():
        return torch.empty(doubles, dtype=torch.float64, device=device)
    key = (device.index if device.index is not None else torch.cuda.current_device(), stream)
    work = _WORKSPACES.get(key)
    if work is None or work.numel() < doubles:
        work = torch.empty(doubles, dtype=torch.float64, device=device)
        _WORKSPACES[key] = work
    return work


def launch(kernels, name: str, device: torch.device, *args, op: str, cpu_args: tuple = (),
           cuda_workspace_doubles: int | None = None) -> None:
    """Run native kernel ``name`` of ``kernels`` (a ``_native`` submodule) for ``device``:
    ``<name>_cpu(*args, *cpu_args)``, or on CUDA, with the device current and on the caller's
    current stream, ``<name>_cuda(*args[, workspace], stream)``, with a float64 workspace of
    ``cuda_workspace_doubles`` (at least one; see :func:`cuda_workspace`: the kernel must treat
    it as scratch, written before read) when that is given. ``op`` names the op in errors.
    No host synchronisation."""
    with native_stream(device, op) as stream:
        if device.type == "cuda":
            extra = () if cuda_workspace_doubles is None else (
                cuda_workspace(device, stream, cuda_workspace_doubles).data_ptr(),)
            getattr(kernels, f"{name}_cuda")(*args, *extra, stream)
        else:
            getattr(kernels, f"{name}_cpu")(*args, *cpu_args)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the enclosed torch ops on ``n`` intra-op threads (None: leave the count alone).

    Loops of many small torch calls wait at OpenMP barriers for threads the OS has preempted:
    on a shared 2-core machine that made them 5x slower (measured in em_accel.embed.tsne).
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# Ops: one custom op for tracers, a direct call for plain eager use.

_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _plain_eager_call(args: tuple, kwargs: dict) -> bool:
    """True when nothing is tracing or transforming this call and every tensor argument is a
    plain tensor that autograd need not follow: then the custom op's dispatch adds only cost."""
    if (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch._C._are_functorch_transforms_active()
            or torch._C._len_torch_dispatch_stack() > 0):  # FakeTensorMode, FlopCounterMode, ...
        return False
    grad = torch.is_grad_enabled()
    for a in itertools.chain(args, kwargs.values()):
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN_TENSORS or grad and a.requires_grad):
            return False
    return True


class NativeOp:
    """``torch.library.custom_op(name, mutates_args=())`` over ``fn``, callable like ``fn``.

    Tracers (torch.compile, opcheck, fake tensors, vmap, autograd) see the custom op ``.op``
    (also ``torch.ops.em_accel.<name>``). A plain eager call with no gradient to record runs
    ``fn`` directly: the custom op's first call in a process imports torch._dynamo (1-2 s, the
    "first-call stall" of t-SNE, multislice and every CLI command) and each dispatch costs tens
    of µs, for the same result.
    """

    def __init__(self, name: str, fn: Callable):
        self.name = name
        self.op = torch.library.custom_op(name, mutates_args=())(fn)
        self._fn = fn
        functools.update_wrapper(self, fn)

    def register_fake(self, fn: Callable) -> Callable:
        return self.op.register_fake(fn)

    def register_autograd(self, backward: Callable, *, setup_context: Callable | None = None) -> None:
        self.op.register_autograd(backward, setup_context=setup_context)

    def __call__(self, *args, **kwargs):
        if _plain_eager_call(args, kwargs):
            return self._fn(*args, **kwargs)
        return self.op(*args, **kwargs)


def native_op(name: str) -> Callable[[Callable], NativeOp]:
    """Decorator: ``@native_op("em_accel::x")`` makes ``x`` a NativeOp (see there)."""
    return lambda fn: NativeOp(name, fn)
