"""A fast subset of the mutation fuzz (``python -m bench fuzz`` runs >= 10,000 calls).

Malformed calls to every registered native op, the em_accel.ops wrappers and
em_accel.io.read_image (malformed files) run in a worker process; a crash or a call that
outlives the timeout is caught by the parent. Every failure must be a named exception
(ValueError, TypeError or RuntimeError, em_accel.errors included).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_fuzz import run_campaign  # noqa: E402


def test_fuzz_subset_has_no_crash_hang_or_unnamed_exception():
    result = run_campaign(240, seed=20261205, groups=("op", "wrapper", "io"), timeout=60.0)
    counts = result["counts"]
    bad = [f"{c['outcome']}: {c['target']} with {c['mutation']}: {c.get('exc')} "
           f"{c.get('message') or c.get('stderr_tail', '')[-500:]}" for c in result["notable"]]
    assert result["calls"] == 240
    assert not result["base_failures"]  # every unmutated call works, so mutations test the checks
    assert counts.get("crash", 0) == 0 and counts.get("hang", 0) == 0, bad
    assert counts.get("other", 0) == 0, bad
    assert counts.get("named", 0) > 120  # the mutations do reach the checks
