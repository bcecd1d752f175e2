"""em-accel demo: the fast run writes a report with every stage, finite errors that beat their
trivial baselines, and one failing or missing stage never stops the others."""
from __future__ import annotations

import json
import math
import re

import pytest

from em_accel.cli import main
from em_accel.demo import StageResult, run_demo
from em_accel.demo import runner


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = main(["demo", "-o", str(out), "--fast", "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    failed = {s["name"]: s["error"] for s in summary["stages"] if s["status"] == "failed"}
    assert not failed, f"demo stages failed: {failed}"  # a failing stage is a bug in that stage
    assert rc == 0
    return out


def _numbers(summary: dict, stage: str) -> dict:
    entry = next(s for s in summary["stages"] if s["name"] == stage)
    assert entry["status"] == "ok", entry
    return entry["numbers"]


def test_report_has_every_stage(fast_demo):
    summary = json.loads((fast_demo / "summary.json").read_text())
    html = (fast_demo / "report.html").read_text()
    ran = [s for s in summary["stages"] if s["status"] == "ok"]
    assert {"simulate", "scan", "denoise", "map"} <= {s["name"] for s in ran}
    for s in ran:
        assert s["title"] in html.replace("&amp;", "&")
        assert s["seconds"] > 0
        assert all(math.isfinite(v) for v in s["numbers"].values()), s
    # self-contained: every image is a data URI, nothing is fetched
    assert "data:image/png;base64," in html
    assert not re.search(r'src="(?!data:)', html)
    assert len(list(fast_demo.glob("*.png"))) >= 10


def test_errors_beat_trivial_baselines(fast_demo):
    summary = json.loads((fast_demo / "summary.json").read_text())
    sim = _numbers(summary, "simulate")
    assert 0.9 < sim["crystal mean |ψ|² (1 = flux kept)"] <= 1.0 + 1e-4
    scan = _numbers(summary, "scan")
    assert (scan["RMSE nearest-neighbour infill (fraction of range)"]
            < scan["RMSE mean fill, baseline (fraction of range)"])
    den = _numbers(summary, "denoise")
    assert den["RMSE denoiser (fraction of range)"] < den["RMSE noisy frame (fraction of range)"]
    assert (den["RMSE denoiser (fraction of range)"]
            < den["RMSE Gaussian blur σ=1 px, baseline (fraction of range)"])
    m = _numbers(summary, "map")
    assert (m["5-NN source agreement in the map (fraction)"]
            > m["5-NN source agreement by chance, baseline (fraction)"] + 0.1)


def test_failing_and_absent_stages_are_reported(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("stage exploded")

    def fine(ctx):
        return StageResult("A fine stage", numbers={"x (1)": 1.0})

    real = runner._load
    modules = {"boom": type("M", (), {"run": staticmethod(boom)}),
               "fine": type("M", (), {"run": staticmethod(fine)})}
    monkeypatch.setattr(runner, "_load", lambda name: modules.get(name) or real(name))
    report = run_demo(tmp_path, stages=["boom", "no_such_stage", "fine"], progress=False)
    status = {r.name: r.status for r in report.stages}
    assert status == {"boom": "failed", "no_such_stage": "absent", "fine": "ok"}
    assert "stage exploded" in report.stages[0].error
    html = report.html.read_text()
    assert "stage exploded" in html and "A fine stage" in html and "no_such_stage" in html


def test_stage_order_lists_fixed_names_first():
    names = runner.stage_names()
    assert names[:len(runner.STAGES)] == list(runner.STAGES)
    assert len(set(names)) == len(names)
