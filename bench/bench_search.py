"""Image search: the default query (raw 24x24 features, all 8 dihedral views of the query, an
item scores by its nearest view) view by view vs factorised (em_accel.embed.dihedral), in the
same run.

Data: 20,000 synthetic micrograph crops (--quick 2,000; the same as bench_embed). Queries: the
first 1000 crops under a random non-identity rotation/flip and Poisson noise at 100 and 1000
counts/px, min-max scaled (:func:`em_accel.embed.retrieval.make_queries`), searched in one batch
(k = 5). Rows per dose:

* ms per query (median of repeats) of ``Index.search(method="exhaustive")`` (every item against
  every view: the default before), ``method="dihedral"`` (the default now) and one view
  (no rotation invariance: the cheapest exact search), with the ratio;
* agreement: queries whose factorised top 5 equals the view-by-view top 5 (same items, same
  order; and same set), the largest distance difference;
* recall@5 of the query's own crop among the 20,000 (standardised features; and the plain
  averages the index used before);
* the one-off preparation time of the items' coordinates (per index, on the first search).
"""
from __future__ import annotations

import time

import torch

from bench.harness import available_devices, median_time, print_table, write_record

N_FULL, N_QUICK = 20_000, 2_000
N_QUERIES = 1000


def query_rows(crops: torch.Tensor, device: str, n_queries: int = N_QUERIES,
               doses: tuple[float, ...] = (100.0, 1000.0), repeats: int = 5) -> list[dict]:
    """The rows described in the module docstring for ``crops`` [N, 96, 96] on ``device``."""
    from em_accel.embed import dihedral
    from em_accel.embed.features import RAW_SIDE, encode, encode_views
    from em_accel.embed.index import Index
    from em_accel.embed.retrieval import make_queries

    n = crops.shape[0]
    nq = min(n_queries, n)
    perms = dihedral.dihedral_permutations(RAW_SIDE)
    index = Index(encode(crops, "raw").features, view_permutations=perms, device=device)
    t0 = time.perf_counter()
    index.search(encode_views(crops[:1], "raw").features.to(device), 5, method="dihedral")
    prep_s = time.perf_counter() - t0
    plain = Index(encode(crops, "raw", standardise=False).features, device=device)
    truth = torch.arange(nq, device=device)[:, None]
    rows = []
    for dose in doses:
        q = make_queries(crops[:nq], dose, seed=1)
        qv = encode_views(q, "raw").features.to(device)
        search = {
            "exhaustive": lambda: index.search(qv, 5, method="exhaustive", batch_size=8 * nq),
            "dihedral": lambda: index.search(qv, 5, method="dihedral", batch_size=nq),
            "one_view": lambda: index.search(qv[:, 0].contiguous(), 5, method="exhaustive",
                                             batch_size=nq),
        }
        ms = {name: 1000 * median_time(fn, device, warmup=1, repeats=repeats) / nq
              for name, fn in search.items()}
        ex, ts = search["exhaustive"](), search["dihedral"]()
        pv = encode_views(q, "raw", standardise=False).features.to(device)
        rp = plain.search(pv, 5, method="exhaustive", batch_size=8 * nq)
        rows.append({
            "device": device, "n": n, "queries": nq, "dose": dose, "k": 5,
            "query_block": dihedral.QUERY_BLOCK,
            "exhaustive_ms": ms["exhaustive"], "dihedral_ms": ms["dihedral"],
            "one_view_ms": ms["one_view"], "speedup": ms["exhaustive"] / ms["dihedral"],
            "agree_top5": float((ex.indices == ts.indices).all(1).float().mean()),
            "agree_set5": float((ex.indices.sort(1).values == ts.indices.sort(1).values)
                                .all(1).float().mean()),
            "max_abs_ddist": float((ex.distances - ts.distances).abs().max()),
            "recall5_dihedral": float((ts.indices == truth).any(1).float().mean()),
            "recall5_exhaustive": float((ex.indices == truth).any(1).float().mean()),
            "recall5_plain_features": float((rp.indices == truth).any(1).float().mean()),
            "prepare_s": prep_s,
        })
    return rows


def run(quick: bool = False):
    from bench.bench_embed import _crops

    n = N_QUICK if quick else N_FULL
    t0 = time.perf_counter()
    crops = _crops(n)
    t_data = time.perf_counter() - t0
    devices = available_devices()
    rows = [r for dev in devices for r in query_rows(crops, dev, repeats=3 if quick else 5)]
    print_table("query, k = 5, 8 dihedral views, ms per query (batched)", rows,
                ["device", "n", "dose", "exhaustive_ms", "dihedral_ms", "one_view_ms",
                 "speedup", "agree_top5", "agree_set5", "max_abs_ddist",
                 "recall5_dihedral", "recall5_exhaustive", "recall5_plain_features"])
    return write_record("search", rows, devices, extra={"n": n, "data_s": t_data,
                                                        "data": "synthetic micrograph crops"})
