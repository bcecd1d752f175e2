"""``em-accel demo``: the whole chain on simulated data, in one self-contained HTML report.

The runner (:func:`run_demo`, command ``em-accel demo [-o OUT] [--fast]``) simulates a crystal
and a nanoparticle (HRTEM and HAADF-STEM), scans the HAADF image sparsely, fills it in, denoises
a noisy frame, maps image crops with t-SNE, and writes ``OUT/report.html`` (every PNG embedded as
a data URI, so the file stands alone), the PNGs, and ``OUT/summary.json`` (numbers and times).

Stage contract (how a capability adds itself to the demo)
---------------------------------------------------------
* A stage is a module ``em_accel/demo/stage_<name>.py`` exposing
  ``run(ctx: DemoContext) -> StageResult``. Nothing else is needed: the runner imports the
  ordered names in :data:`em_accel.demo.runner.STAGES` first, then any other ``stage_*`` module
  found in this package (alphabetically), so a new stage appears without editing shared files.
  To place it in the fixed order, add its name to ``STAGES`` (one small edit).
* A stage reads the shared inputs from ``ctx`` (:class:`DemoContext`); they are simulated
  lazily, once, the first time any stage touches them, and never modified by stages (copy
  before changing). A stage may add its own intermediate results to ``ctx.extras`` (a dict)
  for later stages, e.g. ``ctx.extras["completion"] = completed_image``.
* A stage returns a :class:`StageResult`: a title, panels (``(caption, image)`` where image is a
  2-D numpy array, drawn in grey scale with 0.5/99.5-percentile limits, or the path of a PNG or
  HTML file to embed), numbers (``{"name (unit)": float}``; errors against the simulated truth
  where there is a truth, next to a trivial baseline on the same data, e.g.
  ``"RMSE infill (fraction of range)"`` and ``"RMSE mean fill (fraction of range)"``), free text
  (one paragraph: what was done, with which settings), and ``seconds`` (filled in by the runner).
* Stages honour ``ctx.fast`` (smaller, fewer iterations: the ``--fast`` test runs the whole demo
  in under about 30 s on two CPU cores), ``ctx.device`` (the GPU when present),
  ``ctx.seed`` (derive generators with :meth:`DemoContext.generator`) and ``ctx.progress``
  (pass it on as ``progress=``). Files a stage writes go under ``ctx.out_dir``.
* A stage module that is absent is listed as "not in this build"; one that raises (on import or
  in ``run``) is reported with its error, and the demo carries on: one failing stage never
  stops the others.

Stage names in use: ``simulate``, ``scan`` (sparse scan + nearest-neighbour infill),
``completion``, ``adaptive``, ``denoise``, ``exit_wave``, ``map``, ``vae``.
"""
from __future__ import annotations

from .context import Crops, DemoContext, NoisyFrame, SparseScan, Specimen, StageResult
from .runner import STAGES, DemoReport, StageRecord, run_demo

__all__ = ["Crops", "DemoContext", "DemoReport", "NoisyFrame", "STAGES", "SparseScan", "Specimen",
           "StageRecord", "StageResult", "run_demo"]
