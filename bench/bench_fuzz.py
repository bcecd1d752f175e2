"""Mutation fuzzing of the public entry points: ``python -m bench fuzz [--quick]``.

Hypothesis draws a target (bench/fuzz_targets.py), one to three of its arguments, and a
malformed replacement for each: wrong dtypes, shapes, devices (meta), strides, layouts
(sparse), NaN/inf, empty, huge and negative sizes and values, wrong types, out-of-range indices
and malformed files. The calls run in a worker process that reports each outcome on a pipe;
the parent restarts it when it dies (a crash: signal or abort) or when a call outlives the
timeout (a hang). Every outcome is classed:

- ``ok``: returned; ``named``: raised ValueError, TypeError, RuntimeError (or a subclass, e.g.
  em_accel.errors.*), or FileNotFoundError (a path or shipped structure name that does not
  exist, named in the message);
- ``other``: any other exception (IndexError, KeyError, ZeroDivisionError, MemoryError, ...);
- ``crash`` and ``hang``.

The record (bench/results/fuzz-cpu-*.json) holds the counts, the exception types, and the
description of every crash, hang and ``other``. The worker runs single-threaded under an
address-space limit so huge allocations fail fast instead of swapping.

``run_campaign`` is shared with python_tests/test_fuzz.py (a fast subset in CI).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMED = (ValueError, TypeError, RuntimeError)
ADDRESS_LIMIT = 8 << 30  # bytes of virtual memory for the worker


# ---------------------------------------------------------------------------------------------
# Mutations (run in the worker; hypothesis and torch are imported there).

def _strategies():
    import hypothesis.strategies as st

    ints = st.sampled_from([0, -1, -7, 1, 2, 3, 2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1,
                            2**63, 2**64, 10**30, -2**63])
    floats = st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0,
                              1e300, -1e300, 1e-300, 5e-324, 1e38, 3.4e38, 1e6, -1e6, 2.0**63])
    junk = st.sampled_from([None, "x", "", b"\x00", [], [1, 2], {}, object(), 1 + 2j, True])
    return st, ints, floats, junk


def mutate_tensor(t, data):
    import torch

    st = _strategies()[0]
    kind = data.draw(st.sampled_from([
        "dtype", "ndim+", "ndim-", "empty", "size1", "transpose", "stride", "nan", "inf", "huge",
        "negative", "zeros", "meta", "sparse", "expand", "grow", "shrink", "int-shift",
        "int-scale", "int-random", "permute", "numpy", "list", "scalar", "requires_grad",
        "cuda"]))
    if kind == "dtype":
        dt = data.draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32,
                                        torch.float64, torch.int32, torch.int64, torch.int8,
                                        torch.uint8, torch.bool, torch.complex64,
                                        torch.complex128]))
        return kind, t.to(dt)
    if kind == "ndim+":
        return kind, t.unsqueeze(data.draw(st.integers(0, t.dim())))
    if kind == "ndim-":
        return kind, (t.reshape(-1) if t.dim() > 1 else t.reshape(()) if t.numel() == 1
                      else t[:0].reshape(0, 0) if t.dim() == 1 else t.reshape(1, 1))
    if kind == "empty":
        if t.dim() == 0:
            return kind, t.reshape(1)[:0]
        d = data.draw(st.integers(0, t.dim() - 1))
        return kind, t.narrow(d, 0, 0)
    if kind == "size1":
        if t.dim() == 0:
            return kind, t.reshape(1)
        d = data.draw(st.integers(0, t.dim() - 1))
        return kind, t.narrow(d, 0, min(1, t.shape[d])).contiguous()
    if kind == "transpose" and t.dim() >= 2:
        return kind, t.transpose(-1, -2)
    if kind == "stride" and t.dim() >= 1 and t.shape[-1] > 1:
        return kind, t[..., ::2]
    if kind in ("nan", "inf", "huge", "negative", "zeros"):
        value = {"nan": float("nan"), "inf": float("inf"), "huge": 1e300, "negative": -3.0,
                 "zeros": 0.0}[kind]
        out = t.detach().clone()
        if out.dtype == torch.bool:
            return kind, out
        if not (out.is_floating_point() or out.is_complex()):
            value = {"huge": 2**62, "negative": -3, "zeros": 0}.get(kind, -(2**31))
            value = max(min(value, torch.iinfo(out.dtype).max), torch.iinfo(out.dtype).min)
        elif kind == "huge":  # the largest finite value of the dtype
            value = torch.finfo(out.dtype).max
        if out.numel():
            flat = out.reshape(-1)
            idx = data.draw(st.integers(0, flat.numel() - 1))
            if data.draw(st.booleans()):
                flat.fill_(value)
            else:
                flat[idx] = value
        return kind, out
    if kind == "meta":
        return kind, t.to("meta")
    if kind == "cuda" and torch.cuda.is_available():  # the other arguments stay on the CPU
        return kind, t.to("cuda")
    if kind == "sparse" and t.dim() >= 1:
        return kind, t.to_sparse()
    if kind == "expand" and t.dim() >= 1:
        return kind, t.narrow(0, 0, min(1, t.shape[0])).expand(max(2, t.shape[0]), *t.shape[1:])
    if kind in ("grow", "shrink") and t.dim() >= 1:
        d = data.draw(st.integers(0, t.dim() - 1))
        n = t.shape[d]
        if kind == "grow":
            return kind, torch.cat([t, t.narrow(d, 0, min(n, 3))], d) if n else t
        return kind, t.narrow(d, 0, max(0, n - data.draw(st.integers(1, 3))))
    if kind.startswith("int-") and not (t.is_floating_point() or t.is_complex()) \
            and t.dtype != torch.bool and t.numel():
        info = torch.iinfo(t.dtype)
        if kind == "int-shift":
            shift = data.draw(st.sampled_from([-1, 1, -1000, 1000, -(2**30)]))
            return kind, (t.long() + shift).clamp(info.min, info.max).to(t.dtype)
        if kind == "int-scale":
            return kind, (t.long() * data.draw(st.sampled_from([-1, 2, 1000]))).clamp(
                info.min, info.max).to(t.dtype)
        lo, hi = data.draw(st.sampled_from([(-5, 5), (-(2**31), 2**31 - 1), (0, 2**20)]))
        lo, hi = max(lo, info.min), min(hi, info.max)
        seed = data.draw(st.integers(0, 2**31))
        g = torch.Generator().manual_seed(seed)
        return kind, torch.randint(lo, hi, t.shape, generator=g, dtype=torch.int64).to(t.dtype)
    if kind == "permute" and t.numel() > 1:
        seed = data.draw(st.integers(0, 2**31))
        perm = torch.randperm(t.numel(), generator=torch.Generator().manual_seed(seed))
        return kind, t.detach().reshape(-1)[perm].reshape(t.shape)
    if kind == "numpy" and t.layout == torch.strided and t.device.type == "cpu" \
            and t.dtype not in (torch.bfloat16,):
        return kind, t.detach().numpy()
    if kind == "list":
        return kind, t.detach().tolist() if t.device.type == "cpu" else []
    if kind == "scalar":
        return kind, data.draw(_strategies()[2])
    if kind == "requires_grad" and (t.is_floating_point() or t.is_complex()):
        return kind, t.detach().clone().requires_grad_(True)
    return "junk", data.draw(_strategies()[3])


def mutate_value(value, data, files):
    import numpy as np
    import torch

    from bench.fuzz_targets import FileArg

    st, ints, floats, junk = _strategies()
    if isinstance(value, FileArg):
        return files.malformed(str(value), data)
    if isinstance(value, torch.Tensor):
        return mutate_tensor(value, data)
    if isinstance(value, np.ndarray):
        kind, t = mutate_tensor(torch.from_numpy(np.ascontiguousarray(value)), data)
        return kind, (t.numpy() if isinstance(t, torch.Tensor) and t.layout == torch.strided
                      and t.device.type == "cpu" and t.dtype != torch.bfloat16 else t)
    if isinstance(value, bool):
        return "bool", data.draw(st.sampled_from([None, 2, "yes", not value]))
    if isinstance(value, int):
        return "int", data.draw(st.one_of(ints, floats, junk))
    if isinstance(value, float):
        return "float", data.draw(st.one_of(floats, ints, junk))
    if isinstance(value, str):
        return "str", data.draw(st.sampled_from(["", "nonsense", "NEAREST", "exact ", None, 3,
                                                 "../../etc/passwd", "Xx", "fft\x00"]))
    if isinstance(value, (tuple, list)):
        choice = data.draw(st.sampled_from(["empty", "longer", "negative", "nan", "junk"]))
        if choice == "empty":
            return "seq-empty", type(value)()
        if choice == "longer":
            return "seq-longer", type(value)(list(value) + list(value))
        if choice == "negative":
            return "seq-negative", type(value)(-v if isinstance(v, (int, float)) else v for v in value)
        if choice == "nan":
            return "seq-nan", type(value)(float("nan") for _ in value)
        return "seq-junk", data.draw(junk)
    if isinstance(value, torch.nn.Module):
        return "module-junk", data.draw(junk)
    return "junk", data.draw(junk)


class Files:
    """Malformed files in a scratch directory (random bytes, truncated, flipped bytes, empty,
    a directory, a missing path, the wrong format under a suffix, an object-array .npy)."""

    def __init__(self, directory: Path):
        import numpy as np

        self.dir = directory
        self.rng = np.random.default_rng(0)
        self.count = 0

    def malformed(self, suffix: str, data):
        import numpy as np

        from bench.fuzz_targets import valid_file

        st = _strategies()[0]
        kind = data.draw(st.sampled_from(["random", "truncated", "flipped", "empty", "dir",
                                          "missing", "wrong-format", "valid", "npy-object",
                                          "huge-header"]))
        self.count += 1
        path = self.dir / f"f{self.count}{suffix}"
        seed = data.draw(st.integers(0, 2**31))
        rng = np.random.default_rng(seed)
        if kind == "random":
            path.write_bytes(rng.bytes(int(rng.integers(1, 4096))))
        elif kind in ("truncated", "flipped", "valid", "huge-header"):
            raw = bytearray(valid_file(suffix, self.dir, rng).read_bytes())
            if kind == "truncated":
                raw = raw[:int(rng.integers(0, max(1, len(raw))))]
            elif kind == "flipped":
                for i in rng.integers(0, len(raw), size=int(rng.integers(1, 16))):
                    raw[i] = int(rng.integers(0, 256))
            elif kind == "huge-header":  # large size fields in the first bytes
                for i in range(4, min(len(raw), 64), 4):
                    raw[i:i + 4] = (0x7FFFFFFF).to_bytes(4, "little")
            path.write_bytes(bytes(raw))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "dir":
            path.mkdir()
        elif kind == "wrong-format":
            other = data.draw(st.sampled_from([".tif", ".mrc", ".npy", ".png"]))
            path.write_bytes(valid_file(other, self.dir, rng).read_bytes())
        elif kind == "npy-object":
            with open(path, "wb") as f:
                np.save(f, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        return f"file-{kind}", path


# ---------------------------------------------------------------------------------------------
# Worker: draws and runs calls, one line of JSON per event on the protocol pipe.

def classify(exc: BaseException | None, value_kinds: list[str]) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, NAMED):
        return "named"
    if isinstance(exc, FileNotFoundError):  # a path or shipped name that does not exist
        return "named"
    return "other"


def worker(calls: int, seed: int, groups: tuple[str, ...], proto_fd: int, skip: int) -> None:
    import faulthandler
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))
    faulthandler.enable()
    import torch

    torch.set_num_threads(1)
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from bench.fuzz_targets import FileArg, all_targets, describe

    proto = os.fdopen(proto_fd, "w", buffering=1)
    targets = all_targets(groups)
    tmp = tempfile.TemporaryDirectory(prefix="em_accel_fuzz_")
    files = Files(Path(tmp.name))
    state = {"n": 0}

    def emit(**kw):
        proto.write(json.dumps(kw) + "\n")

    @settings(max_examples=calls, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @hseed(seed)
    @given(st.data())
    def one(data):
        if state["n"] >= calls:
            return
        target = data.draw(st.sampled_from(targets))
        args, kwargs = target.base()
        slots = [("arg", i) for i in range(len(args))] + [("kw", k) for k in kwargs]
        n_mut = data.draw(st.integers(1, min(3, len(slots)))) if slots else 0
        chosen = data.draw(st.lists(st.sampled_from(slots), min_size=n_mut, max_size=n_mut,
                                    unique=True)) if slots else []
        desc, kinds = [], []
        for where, key in chosen:
            old = args[key] if where == "arg" else kwargs[key]
            try:
                kind, new = mutate_value(old, data, files)
            except Exception:  # a mutation this value does not admit: a wrong type instead
                kind, new = "junk", data.draw(_strategies()[3])
            if where == "arg":
                args[key] = new
            else:
                kwargs[key] = new
            kinds.append(kind)
            desc.append(f"{key}<-{kind}:{describe(new)}")
        i = state["n"]
        state["n"] += 1
        if i < skip:
            return
        emit(event="start", i=i, target=target.name, mutation="; ".join(desc))
        exc = None
        try:
            target.fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - the point is to see everything
            if isinstance(e, KeyboardInterrupt):
                raise
            exc = e
        emit(event="end", i=i, outcome=classify(exc, kinds),
             exc=None if exc is None else type(exc).__name__,
             module=None if exc is None else type(exc).__module__,
             message=None if exc is None else str(exc)[:200])

    if skip == 0:  # the unmutated calls must work, or the mutations test nothing
        for target in targets:
            args, kwargs = target.base()
            if any(isinstance(a, FileArg) for a in args):
                continue
            try:
                target.fn(*args, **kwargs)
                emit(event="base", target=target.name, exc=None)
            except Exception as e:  # noqa: BLE001
                emit(event="base", target=target.name, exc=f"{type(e).__name__}: {str(e)[:200]}")
    while state["n"] < calls:
        before = state["n"]
        one()
        if state["n"] == before:  # hypothesis stopped drawing new examples
            break
    emit(event="done", n=state["n"])


# ---------------------------------------------------------------------------------------------
# Parent: runs workers, restarts them after a crash or a hang, counts.

def run_campaign(calls: int, seed: int = 0, groups: tuple[str, ...] = ("op", "wrapper", "api", "io"),
                 timeout: float = 30.0, log=None) -> dict:
    """Run ``calls`` fuzzed calls; returns the counts and the notable cases."""
    root = Path(__file__).resolve().parents[1]
    counts = collections.Counter()
    exc_types = collections.Counter()
    per_target = collections.defaultdict(collections.Counter)
    notable: list[dict] = []
    base_failures: dict[str, str] = {}
    done, restarts, t0 = 0, 0, time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    worker_seed = seed
    while done < calls:
        r, w = os.pipe()
        cmd = [sys.executable, "-m", "bench.bench_fuzz", "--worker", "--calls", str(calls - done),
               "--seed", str(worker_seed), "--groups", ",".join(groups), "--fd", str(w)]
        errlog = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker never blocks
        proc = subprocess.Popen(cmd, cwd=root, env=env, pass_fds=(w,), stdout=subprocess.DEVNULL,
                                stderr=errlog)
        os.close(w)

        def stderr_tail() -> str:
            errlog.seek(0)
            return errlog.read().decode(errors="replace")[-3000:]

        reader = os.fdopen(r)
        current, finished = None, False
        deadline = time.time() + max(timeout, 120.0)  # the first call also waits for imports
        while True:
            ready, _, _ = select.select([reader], [], [], max(0.0, deadline - time.time()))
            if not ready:  # hang
                proc.kill()
                proc.wait()
                if current is not None:
                    counts["hang"] += 1
                    per_target[current["target"]]["hang"] += 1
                    notable.append({**current, "outcome": "hang", "timeout_s": timeout})
                    done += 1
                break
            line = reader.readline()
            if not line:  # worker exited
                proc.wait()
                if current is not None:
                    err = stderr_tail()
                    counts["crash"] += 1
                    per_target[current["target"]]["crash"] += 1
                    notable.append({**current, "outcome": "crash", "returncode": proc.returncode,
                                    "stderr_tail": err})
                    done += 1
                elif not finished:
                    err = stderr_tail()
                    raise RuntimeError(f"fuzz worker failed before any call (rc "
                                       f"{proc.returncode}):\n{err}")
                break
            ev = json.loads(line)
            if ev["event"] == "base":
                if ev["exc"]:
                    base_failures[ev["target"]] = ev["exc"]
                deadline = time.time() + max(timeout, 120.0)
            elif ev["event"] == "start":
                current = ev
                deadline = time.time() + timeout
            elif ev["event"] == "end":
                counts[ev["outcome"]] += 1
                per_target[current["target"]][ev["outcome"]] += 1
                if ev["exc"]:
                    exc_types[f"{ev['module']}.{ev['exc']}"] += 1
                if ev["outcome"] == "other":
                    notable.append({**current, **ev})
                current = None
                done += 1
                if log and done % 500 == 0:
                    log(f"{done}/{calls} calls, {dict(counts)}, {time.time() - t0:.0f} s")
            elif ev["event"] == "done":
                finished = True
                if ev["n"] == 0:
                    done = calls  # nothing more to draw
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errlog.close()
        restarts += 1
        worker_seed += 1_000_003
    return {"calls": done, "counts": dict(counts), "exception_types": dict(exc_types.most_common()),
            "per_target": {k: dict(v) for k, v in sorted(per_target.items())},
            "notable": notable, "base_failures": base_failures, "workers": restarts, "wall_s": round(time.time() - t0, 1),
            "seed": seed, "timeout_s": timeout, "groups": list(groups)}


def run(quick: bool = False, calls: int | None = None, seed: int = 0) -> Path:
    from bench.harness import write_record

    calls = calls or (400 if quick else 10_000)
    result = run_campaign(calls, seed=seed, log=lambda s: print(s, flush=True))
    c = result["counts"]
    print(f"\nfuzz: {result['calls']} calls in {result['wall_s']} s: ok {c.get('ok', 0)}, named "
          f"{c.get('named', 0)}, other {c.get('other', 0)}, crash {c.get('crash', 0)}, "
          f"hang {c.get('hang', 0)}")
    for name, exc in result["base_failures"].items():
        print(f"  BASE CALL FAILS (its mutations test little): {name}: {exc}")
    for case in result["notable"][:20]:
        print(f"  {case['outcome']}: {case['target']} with {case['mutation']}: "
              f"{case.get('exc') or ''} {case.get('message') or ''}")
    rows = [{"target": t, **v} for t, v in result["per_target"].items()]
    return write_record("fuzz", rows, ["cpu"], extra={k: v for k, v in result.items()
                                                      if k != "per_target"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_fuzz")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--groups", default="op,wrapper,api,io")
    p.add_argument("--fd", type=int, default=1)
    p.add_argument("--skip", type=int, default=0)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.calls, a.seed, tuple(a.groups.split(",")), a.fd, a.skip)
        return 0
    run(calls=a.calls, seed=a.seed)
    return 0


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
