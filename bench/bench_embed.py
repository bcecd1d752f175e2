"""Maps and search of image collections: encode throughput, map time, query latency, map quality.

Data: crops of synthetic micrographs (em_accel.data.synthetic; 160 images of 256 px, 125 crops
each = 20,000 crops of 96 px at random scales; --quick: 2,000). Rows:

* encode: crops/s of each encoder (raw 24x24 pixels, PCA-50 fit + transform, the contrastive
  encoder, the thesis's VAE encoder) at batch 256;
* map: ``make_map`` on the crops (default encoder and settings: dihedral-view neighbours,
  t-SNE 750 iterations on PCA-50, US-tSNE, PNG, HTML, index), wall time by stage;
* query: ms per query of ``Index.search`` (k = 5, 1000 queries in batches of 1000; one view
  and 8 dihedral views) over the 20k items, for 576-d raw and 64-d features, view by view
  (the default search's factorised path, with agreement and recall: bench_search.py);
* quality: 10-NN preservation and exact KL (against the same P) of our t-SNE and openTSNE's
  (FFT, defaults) on the same PCA-50 features, with wall times;
* the map page's size and load time in headless Chromium (goto until drawn), if installed.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import available_devices, print_table, write_record

N_FULL, N_QUICK = 20_000, 2_000


def _crops(n: int) -> torch.Tensor:
    from em_accel.data import synthetic_images
    from em_accel.embed.retrieval import heldout_crops

    per = 125
    return heldout_crops(synthetic_images(max(2, n // per), 256, seed=11), per, seed=3)[:n]


def _page_load_ms(html: Path) -> float | None:
    """Time until the map page has decoded its atlases and drawn (Chromium, headless), or None
    without Chromium/Playwright."""
    import shutil

    exe = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if exe is None:
        return None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = b.new_page(viewport={"width": 1200, "height": 800})
        t0 = time.perf_counter()
        page.goto(html.resolve().as_uri())
        page.wait_for_function("window.emMap && window.emMap.ready", timeout=120_000)
        ms = 1000 * (time.perf_counter() - t0)
        b.close()
    return ms


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(quick: bool = False):
    from em_accel.embed import affinities, kl_divergence, knn_preservation, pca
    from em_accel.embed.collection import Collection
    from em_accel.embed.features import encode, load_pretrained
    from em_accel.embed.index import Index
    from em_accel.embed.mapping import make_map
    from em_accel.embed.vae import VAE

    torch.manual_seed(0)
    n = N_QUICK if quick else N_FULL
    crops, t_data = _timed(lambda: _crops(n))
    rows: list[dict] = []
    devices = available_devices()
    for dev in devices:
        sub = crops[:2048]
        con = load_pretrained("contrastive", dev)
        vae = VAE().to(dev).eval()  # throughput only: random weights cost the same
        for name, enc in (("raw", "raw"), ("pca", "pca"), ("contrastive", con), ("vae", vae)):
            encode(sub[:256], enc, device=dev)  # warm-up
            _, t = _timed(lambda: encode(sub, enc, device=dev, batch_size=256))
            rows.append({"row": "encode", "device": dev, "encoder": name, "n": len(sub),
                         "crops_per_s": len(sub) / t})

        col = Collection(crops, [f"crop_{i}" for i in range(n)], [{"file": f"crop_{i}"} for i in range(n)])
        with tempfile.TemporaryDirectory() as tmp:
            s, t = _timed(lambda: make_map([], tmp, collection=col, device=dev, progress=False))
            rows.append({"row": "map", "device": dev, "encoder": "raw", "n": n, "total_s": t,
                         **{f"{k}_s": v for k, v in s.timings.items()}, "kl": s.kl,
                         "html_mb": (Path(tmp) / "map.html").stat().st_size / 1e6,
                         "page_load_ms": _page_load_ms(Path(tmp) / "map.html")})

        raw = encode(crops, "raw").features
        q = raw[:1000] + 0.01 * torch.randn(1000, raw.shape[1])
        for dim_name, feats, queries in (("raw576", raw, q),
                                         ("d64", raw[:, :64].contiguous(), q[:, :64].contiguous())):
            index = Index(feats, device=dev)
            views = queries[:, None].expand(-1, 8, -1).contiguous()
            for nv, qq in ((1, queries), (8, views)):
                index.search(qq[:100], 5)  # warm-up
                _, t = _timed(lambda: index.search(qq, 5, batch_size=1000 * nv))
                rows.append({"row": "query", "device": dev, "features": dim_name, "n": n,
                             "views": nv, "ms_per_query": 1000 * t / len(qq)})

    # map quality beside openTSNE on the same PCA-50 features (CPU)
    x = pca(encode(crops, "raw").features.double(), 50).float()
    P = affinities(x, 30.0)
    from em_accel.embed import tsne
    y_ours, t_ours = _timed(lambda: tsne(x, 30.0, 750, seed=0, progress=False))
    q = {"row": "quality", "device": "cpu", "n": n, "ours_s": t_ours,
         "ours_kl": kl_divergence(P, y_ours), "ours_10nn": knn_preservation(x, y_ours, 10)}
    try:
        from openTSNE import TSNE as OpenTSNE
        y_open, t_open = _timed(lambda: torch.from_numpy(np.asarray(
            OpenTSNE(perplexity=30, n_jobs=max(1, torch.get_num_threads()), random_state=0)
            .fit(x.double().numpy()))).float())
        q.update({"opentsne_s": t_open, "opentsne_kl": kl_divergence(P, y_open),
                  "opentsne_10nn": knn_preservation(x, y_open, 10)})
    except ImportError:
        q["opentsne"] = "not installed"
    rows.append(q)

    print_table("encode", [r for r in rows if r["row"] == "encode"],
                ["device", "encoder", "n", "crops_per_s"])
    print_table("map", [r for r in rows if r["row"] == "map"],
                ["device", "n", "total_s", "read_s", "encode_s", "tsne_affinities_s",
                 "tsne_optimize_s", "uniform_s", "neighbours_s", "write_s", "html_mb",
                 "page_load_ms"])
    print_table("query (k = 5)", [r for r in rows if r["row"] == "query"],
                ["device", "features", "n", "views", "ms_per_query"])
    print_table("quality (same P, exact KL)", [r for r in rows if r["row"] == "quality"],
                ["n", "ours_s", "ours_kl", "ours_10nn", "opentsne_s", "opentsne_kl", "opentsne_10nn"])
    return write_record("embed", rows, devices, extra={"n": n, "data_s": t_data,
                                                       "data": "synthetic micrograph crops"})
