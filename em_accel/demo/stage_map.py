"""Demo stage: a t-SNE map (:func:`em_accel.embed.tsne`) of image crops from the four
simulated images, with the 5-nearest-neighbour source agreement against chance."""
from __future__ import annotations

import numpy as np
import torch

from .context import DemoContext, StageResult


def neighbour_agreement(y: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of each point's ``k`` nearest map neighbours that share its label."""
    d = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


def _scatter(y: np.ndarray, labels: np.ndarray, sources, path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.6), dpi=100)
    for k, name in enumerate(sources):
        sel = labels == k
        ax.scatter(y[sel, 0], y[sel, 1], s=12, label=name, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(ctx: DemoContext) -> StageResult:
    from ..embed import tsne
    from ..embed.plot import image_grid

    c = ctx.crops
    x = torch.from_numpy(c.images.reshape(len(c.images), -1))
    n_iter = 300 if ctx.fast else 750
    y = tsne(x, perplexity=15.0, n_iter=n_iter, seed=ctx.seed, device=ctx.device,
             progress=False).cpu().numpy()
    scatter = ctx.out_dir / "map_scatter.png"
    _scatter(y, c.labels, c.sources, scatter)
    grid = image_grid(y, c.images, n=len(y), size=420, seed=ctx.seed)
    counts = np.bincount(c.labels)
    chance = float(((counts / counts.sum()) ** 2).sum())
    numbers = {
        "crops": float(len(y)),
        "5-NN source agreement in the map (fraction)": neighbour_agreement(y, c.labels),
        "5-NN source agreement by chance, baseline (fraction)": chance,
    }
    page, same_source = _interactive(ctx, y)
    numbers["top-5 search results from the query's own image (fraction)"] = same_source
    text = (f"{len(y)} crops of {c.images.shape[1]}×{c.images.shape[2]} px from the four simulated "
            f"images, embedded by t-SNE on raw pixels (perplexity 15, {n_iter} iterations, native "
            "kernels). Crops of the same image should gather: the share of each crop's five "
            "nearest map neighbours from its own image is compared with chance. The interactive "
            "map (em-accel map's page: uniformly separated t-SNE; hover for a crop, click for its "
            "5 nearest crops by 24x24-pixel features matched over rotations and flips) is "
            "embedded below; its search results' source agreement is listed too.")
    return StageResult("t-SNE map of image crops", [("map, coloured by source image", scatter),
                                                     ("crops drawn at their map points", grid),
                                                     ("interactive map (hover, click, drag, wheel)", page)],
                       numbers, text)


def _interactive(ctx: DemoContext, y: np.ndarray):
    """The interactive map page of the crops (em_accel.embed.maps) and the share of each
    crop's top-5 search results (dihedral-view raw features) from its own source image."""
    from ..embed.crops import resize_area
    from ..embed.features import encode, encode_views
    from ..embed.index import Index
    from ..embed.maps import MapResult, uniform_grid, write_html
    from ..embed.uniform import uniform_separate

    c = ctx.crops
    crops = resize_area(torch.from_numpy(np.ascontiguousarray(c.images, dtype=np.float32)))
    n = len(crops)
    feats = encode(crops, "raw").features
    views = encode_views(crops, "raw").features
    nb = Index(feats).search(views, min(5, n - 1), exclude=torch.arange(n)).indices
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    res = MapResult(yt, uniform_separate(yt, grid=uniform_grid(n)).float(), nb)
    names = [f"{c.sources[int(l)]} #{i}" for i, l in enumerate(c.labels)]
    meta = [{"source": c.sources[int(l)]} for l in c.labels]
    page = write_html(ctx.out_dir / "map_interactive.html", crops, res, names, meta,
                      title=f"{n} demo crops")
    labels = torch.as_tensor(c.labels)
    return page, float((labels[nb] == labels[:, None]).float().mean())
