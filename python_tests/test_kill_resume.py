"""SIGKILL mid-run, resume, and end where an uninterrupted run ends, with no corrupt file.

Two kinds of kill for each long job: from outside at a moment the test does not choose (the
parent kills the child once it has made progress), and at the worst moment, in the middle of
writing a checkpoint or a shard (the child kills itself from inside the writer). Sizes are
tiny; each test runs in a few seconds plus the child's imports.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from em_accel.train.loop import Trainer, read_log

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

TRAIN_SETUP = """
import os, signal, sys, time
import torch
from em_accel.data import NoisyCropDataset, synthetic_images
from em_accel.models import AtrousDenoiser
from em_accel.train.loop import Trainer, TrainConfig
torch.set_num_threads(1)
torch.manual_seed(0)
ds = NoisyCropDataset(synthetic_images(2, 40, seed=0), 32, "low", seed=3)
model = AtrousDenoiser(width=0.0625, depth=0)
cfg = TrainConfig(steps=STEPS, batch_size=2, checkpoint_every=2, log_every=1, warmup_steps=2)
"""


def _train_child(out: Path, steps: int, body: str) -> subprocess.Popen:
    script = TRAIN_SETUP.replace("STEPS", str(steps)) + textwrap.dedent(body).replace(
        "OUT", repr(str(out)))
    return subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _trainer(out: Path, steps: int) -> Trainer:
    ns: dict = {}
    exec(compile(TRAIN_SETUP.replace("STEPS", str(steps)), "<setup>", "exec"), ns)  # noqa: S102
    return Trainer(ns["model"], ns["ds"], ns["cfg"], out, progress=False)


def _assert_same_run(resumed: Trainer, clean: Trainer, killed_dir: Path, clean_dir: Path) -> None:
    assert resumed.step == clean.step
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(),
                                 clean.model.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(resumed.optimizer.state_dict()["state"].values(),
                    clean.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    drop_time = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert drop_time(read_log(killed_dir)) == drop_time(read_log(clean_dir))


STEPS = 16


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[Trainer, Path]:
    """One uninterrupted run, shared by the kill tests."""
    out = tmp_path_factory.mktemp("clean_run")
    with _one_thread():
        clean = _trainer(out, STEPS)
        clean.fit()
    return clean, out


class _one_thread:
    def __enter__(self):
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(int(os.environ.get("EM_TEST_THREADS", os.cpu_count() or 1)))


def _resume_and_compare(clean_run, killed: Path) -> None:
    with _one_thread():
        resumed = _trainer(killed, STEPS)
        resumed.fit()
    _assert_same_run(resumed, clean_run[0], killed, clean_run[1])


def test_trainer_killed_while_writing_a_checkpoint_resumes_exactly(tmp_path, clean_run):
    """The third checkpoint write dies half-way through its temporary file; a log line is torn."""
    killed = tmp_path / "killed"
    proc = _train_child(killed, STEPS, """
        import safetensors.torch as st
        real, calls = st.save_file, []
        def dying_save(tensors, filename, metadata=None):
            calls.append(filename)
            real(tensors, filename, metadata=metadata)
            if len(calls) == 3:  # torn temp file, then the kill
                data = open(filename, "rb").read()
                open(filename, "wb").write(data[:len(data) // 2])
                with open(os.path.join(OUT, "log.jsonl"), "a") as f:
                    f.write('{"step": 7, "lo')
                os.kill(os.getpid(), signal.SIGKILL)
        st.save_file = dying_save
        Trainer(model, ds, cfg, OUT, progress=False).fit()
    """)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    from em_accel.train.checkpoint import load_checkpoint

    step, _ = load_checkpoint(killed / "checkpoint.safetensors", {})  # the previous one, whole
    assert step == 4
    _resume_and_compare(clean_run, killed)


def test_trainer_sigkill_from_outside_resumes_exactly(tmp_path, clean_run):
    killed = tmp_path / "killed"
    proc = _train_child(killed, STEPS, """
        def slow(trainer, rec):  # give the parent time to kill mid-run
            time.sleep(0.05)
        Trainer(model, ds, cfg, OUT, progress=False).fit(callback=slow)
    """)
    log = killed / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 7:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert (killed / "checkpoint.safetensors").is_file()
    _resume_and_compare(clean_run, killed)


# ---------------------------------------------------------------------------------------------
# em-accel simulate-dataset

DATASET_ARGS = ["--materials", "Si", "MgO", "--energies", "200", "300", "--thicknesses", "4",
                "8", "--zones", "001", "--extent", "6", "--sampling", "0.25",
                "--slice-thickness", "2", "--shard-size", "1", "--scheduler", "synchronous"]

CLI_CHILD = """
import os, signal, sys, time
import em_accel.sim.dataset as D
from em_accel.cli import main
MODE = sys.argv[1]
real_write, real_replace = D.write_shard, D.replace_durably
def slow_write(spec, units, path, device=None):  # give the parent time to kill mid-run
    time.sleep(0.3)
    return real_write(spec, units, path, device)
def dying_replace(tmp, dest):  # the second shard dies between writing and renaming
    if str(dest).endswith("shard-00001.h5"):
        data = open(tmp, "rb").read()
        open(tmp, "wb").write(data[:len(data) // 3])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(tmp, dest)
if MODE == "slow":
    D.write_shard = slow_write
elif MODE == "dying":
    D.replace_durably = dying_replace
sys.exit(main(["simulate-dataset", *sys.argv[2:]]))
"""


def _cli(mode: str, out: Path) -> subprocess.Popen:
    pytest.importorskip("h5py")
    pytest.importorskip("ase")
    return subprocess.Popen([sys.executable, "-c", CLI_CHILD, mode, str(out), *DATASET_ARGS],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_same_dataset(a: Path, b: Path) -> None:
    import h5py

    from em_accel.sim.dataset import load_dataset

    wa, ma = load_dataset(a)
    wb, mb = load_dataset(b)
    assert ma == mb and len(wa) == len(wb) == 8
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())
    for shard in sorted((a / "shards").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:  # every shard opens in h5py and holds its waves
            assert f["waves"].shape[0] == 2 and len(json.loads(f.attrs["meta"])) == 2


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> Path:
    """One uninterrupted em-accel simulate-dataset run, shared by the kill tests."""
    pytest.importorskip("h5py")
    pytest.importorskip("ase")
    from em_accel.cli import main

    out = tmp_path_factory.mktemp("clean_dataset") / "ds"
    assert main(["simulate-dataset", str(out), *DATASET_ARGS]) == 0
    return out


def _finish_and_compare(clean: Path, killed: Path) -> None:
    from em_accel.cli import main

    assert main(["simulate-dataset", str(killed), *DATASET_ARGS]) == 0  # resume
    _assert_same_dataset(killed, clean)


def test_simulate_dataset_killed_while_writing_a_shard_resumes(tmp_path, clean_dataset):
    killed = tmp_path / "killed"
    proc = _cli("dying", killed)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    names = sorted(p.name for p in (killed / "shards").iterdir())
    assert names[0] == "shard-00000.h5" and any(".tmp" in n for n in names)
    assert "shard-00001.h5" not in names  # the torn shard never got its final name
    _finish_and_compare(clean_dataset, killed)


def test_simulate_dataset_sigkill_from_outside_resumes(tmp_path, clean_dataset):
    killed = tmp_path / "killed"
    proc = _cli("slow", killed)
    first = killed / "shards" / "shard-00000.h5"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert len(list((killed / "shards").glob("shard-*.h5"))) < 4  # killed mid-run
    _finish_and_compare(clean_dataset, killed)
