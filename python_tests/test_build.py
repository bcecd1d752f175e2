"""The build: what it contains, what it links, and that it imports without a GPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import em_accel
from em_accel import _native


def test_build_info_keys_and_types():
    info = em_accel.build_info()
    for key, kind in {"version": str, "cuda_compiled": bool, "cuda_available": bool,
                      "openmp": bool, "cuda_archs": list}.items():
        assert isinstance(info[key], kind), key
    assert info["version"] == em_accel.__version__ != "0+unknown"
    assert em_accel.cuda_available() == info["cuda_available"]
    assert "alrc" in info["families"]
    if info["cuda_compiled"]:
        assert info["cuda_archs"] == ["80-real", "90"]


def _needed_libraries() -> list[str]:
    out = subprocess.run(["readelf", "-d", _native.__file__], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
def test_native_module_links_neither_libtorch_nor_shared_cudart():
    needed = _needed_libraries()
    assert not [n for n in needed if "torch" in n or "c10" in n], needed  # DESIGN rule 1
    assert not [n for n in needed if n.startswith("libcudart")], needed   # cudart is static


@pytest.mark.skipif(os.environ.get("EM_ACCEL_REQUIRE_CUDA_BUILD") != "1",
                    reason="set EM_ACCEL_REQUIRE_CUDA_BUILD=1 where nvcc is present (CI does)")
def test_cuda_kernels_were_compiled():
    assert _native.has_cuda(), "nvcc is present but the CUDA kernels were not built"
    assert em_accel.build_info()["cuda_archs"] == ["80-real", "90"]


def test_import_and_info_without_any_gpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    code = "import em_accel, json; print(json.dumps(em_accel.build_info()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)
    info = json.loads(out.stdout)
    assert info["cuda_available"] is False and info["cuda_device_count"] == 0


def test_cli_info_json():
    exe = shutil.which("em-accel")
    cmd = [exe] if exe else [sys.executable, "-m", "em_accel.cli"]
    out = subprocess.run(cmd + ["info", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["version"] == em_accel.__version__


def test_cuda_call_without_gpu_raises_clearly():
    # CPU-only machines: the CUDA launchers either refuse (no CUDA build) or report no device;
    # never a crash.
    p = _native.alrc.Params()
    p.batch, p.elems, p.kind, p.per_pixel, p.dtype = 1, 1, 0, 0, 0
    p.n_up, p.n_down, p.decay = 3.0, float("inf"), 0.9
    if _native.cuda_device_count() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="alrc"):
        _native.alrc.forward_cuda(p, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def _configure(tmp_path: Path, cuda: str, env_path: str) -> subprocess.CompletedProcess:
    pybind11 = pytest.importorskip("pybind11")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=env_path)
    env.pop("CUDACXX", None)
    return subprocess.run(
        ["cmake", "-S", str(root), "-B", str(tmp_path / "b"), f"-DEM_ACCEL_CUDA={cuda}",
         f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
        capture_output=True, text=True, env=env)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_cuda_on_without_compiler_fails_loudly(tmp_path):
    # The same PATH with every nvcc hidden: directories holding one are mirrored without it.
    dirs = []
    for i, d in enumerate(os.environ["PATH"].split(os.pathsep)):
        if d and (Path(d) / "nvcc").exists():
            mirror = tmp_path / f"bin{i}"
            mirror.mkdir()
            for entry in Path(d).iterdir():
                if not entry.name.startswith("nvcc"):
                    (mirror / entry.name).symlink_to(entry)
            d = str(mirror)
        dirs.append(d)
    bins = os.pathsep.join(dirs)
    res = _configure(tmp_path, "ON", bins)
    assert res.returncode != 0
    assert "EM_ACCEL_CUDA=ON but no CUDA compiler was found" in res.stdout + res.stderr


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_cuda_off_configures_cpu_only(tmp_path):
    res = _configure(tmp_path, "OFF", os.environ["PATH"])
    assert res.returncode == 0, res.stderr
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    assert "CMAKE_CUDA_COMPILER:" not in cache


def test_native_core_runs_without_torch_on_numpy_buffers():
    # DESIGN rule 1: _native takes raw buffers, so it works with no torch imported at all.
    code = """
import sys, numpy as np
import em_accel._native as nat
assert 'torch' not in sys.modules
pred = np.array([[1.0, 1.0], [10.0, 10.0]], np.float32); target = np.zeros_like(pred)
mu1 = np.array([1.0], np.float32); mu2 = np.array([2.0], np.float32)
loss = np.empty(2, np.float32); scale = np.empty(2, np.float32)
m1 = np.empty(1, np.float32); m2 = np.empty(1, np.float32)
p = nat.alrc.Params(); p.batch, p.elems, p.kind, p.per_pixel, p.dtype = 2, 2, 0, 0, 0
p.n_up, p.n_down, p.decay = 3.0, float('inf'), 0.5
ptr = lambda a: a.ctypes.data
nat.alrc.forward_cpu(p, *map(ptr, (pred, target, mu1, mu2, loss, scale, m1, m2)))
print(repr((loss.tolist(), scale.tolist(), m1.tolist(), 'torch' in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    loss, scale, m1, torch_loaded = eval(out.stdout)  # noqa: S307 - our own literal output
    threshold = 1.0 + 3.0 * (1.0 + 1e-8) ** 0.5
    assert loss[0] == 1.0 and abs(loss[1] - threshold) < 1e-6
    assert abs(scale[1] - threshold / 100.0) < 1e-7 and scale[0] == 1.0
    assert abs(m1[0] - (0.5 + 0.5 * (1.0 + threshold) / 2)) < 1e-6
    assert torch_loaded is False
