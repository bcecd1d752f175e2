"""Maps of image collections: features -> t-SNE -> uniformly separated t-SNE, written as a
static PNG of thumbnails on the uniform grid (the thesis's figures) and a self-contained
interactive HTML page, with an :class:`~em_accel.embed.index.Index` saved beside them for
``em-accel search``.
"""
from __future__ import annotations

import base64
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .index import Index
from .sigma_distance import sigma_affinities
from .features import fit_pca
from .tsne import tsne_with_info
from .uniform import uniform_separate

HTML = "map.html"
PNG = "map.png"
SKIPPED = "skipped.json"


@dataclass
class MapResult:
    embedding: torch.Tensor      # [N, 2] t-SNE
    uniform: torch.Tensor        # [N, 2] uniformly separated, in [0, 1]^2
    neighbours: torch.Tensor     # [N, k] nearest items of each item (itself excluded)
    timings: dict[str, float] = field(default_factory=dict)
    kl: float = math.nan


def default_perplexity(n: int) -> float:
    """30 (the usual default), lowered for small collections so that 3 * perplexity < N."""
    return float(max(2.0, min(30.0, (n - 2) / 3.0)))


def uniform_grid(n: int) -> int:
    """US-tSNE grid size for n points: the thesis's 25 from 1250 points up, fewer below (each
    column's conditional CDF needs several points; 25 columns of 2 points collapse the map
    onto its edges)."""
    return int(min(25, max(2, math.sqrt(n / 2))))


def build_map(features: torch.Tensor, *, sigma: torch.Tensor | None = None,
              perplexity: float | None = None, n_iter: int = 750, device=None, seed: int = 0,
              neighbours: int = 5, views: torch.Tensor | None = None,
              max_dims: int = 64, progress: bool = False) -> MapResult:
    """t-SNE map (σ-aware affinities when ``sigma`` is given), its uniformly separated version,
    and each item's ``neighbours`` nearest items in feature space (scored by the nearest of
    each item's ``views`` [N, V, D], e.g. features of its 8 dihedral transforms, if given).
    Features of more than ``max_dims`` dimensions go through PCA to 50 first (as the thesis's
    raw-image maps), for t-SNE and for the neighbours. N >= 5 items."""
    n = features.shape[0]
    if n < 5:
        raise ValueError(f"a map needs at least 5 images, got {n}")
    perplexity = perplexity or default_perplexity(n)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    P = None
    if sigma is not None:
        dev = torch.device(device) if device is not None else features.device
        P = sigma_affinities(features.to(dev), sigma.to(dev), perplexity,
                             candidates=min(n - 1, max(4 * int(3 * perplexity), 100)))
        t["sigma_affinities"] = time.perf_counter() - t0
    x = features
    if features.shape[1] > max_dims:
        st = fit_pca(features, 50)
        project = lambda f: (f - st["pca_mean"].to(f)) @ st["pca_axes"].to(f).T  # noqa: E731
        x = project(features)
        views = None if views is None else project(views)
    y, info = tsne_with_info(x, perplexity, n_iter, device=device, seed=seed,
                             affinities=P, progress=progress)
    y = y.cpu()
    t.update({f"tsne_{k}": v for k, v in info.timings.items()})
    t0 = time.perf_counter()
    u = uniform_separate(y, grid=uniform_grid(n))
    t["uniform"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = Index(x, device=device)
    nb = index.search(x if views is None else views, min(neighbours, n - 1),
                      exclude=torch.arange(n)).indices.cpu()
    t["neighbours"] = time.perf_counter() - t0
    return MapResult(y, u.float(), nb, t, info.kl_divergence)


# -- static PNG -------------------------------------------------------------------------------
def grid_assignment(uniform: np.ndarray, cells: int) -> np.ndarray:
    """For a ``cells`` x ``cells`` grid over the unit square, the item nearest each cell centre
    ([cells, cells] item indices, row 0 at the top), as the thesis's uniformly separated image
    maps. Items may repeat where the grid is finer than the points."""
    from scipy.spatial import cKDTree

    c = (np.arange(cells) + 0.5) / cells
    gx, gy = np.meshgrid(c, c[::-1])
    _, idx = cKDTree(uniform).query(np.stack([gx.ravel(), gy.ravel()], 1))
    return idx.reshape(cells, cells)


def thumbnails(crops: torch.Tensor, size: int) -> np.ndarray:
    """uint8 thumbnails [N, size, size] of crops [N, 96, 96] in [0, 1] (area resized)."""
    from .crops import resize_area

    t = resize_area(crops.float(), size) if size != crops.shape[-1] else crops.float()
    return (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def write_png(path: str | Path, crops: torch.Tensor, uniform: torch.Tensor, cells: int | None = None,
              thumb: int = 48) -> Path:
    """The uniformly separated map as one grey PNG: ``cells`` x ``cells`` thumbnails of
    ``thumb`` px (default: about one cell per item, at most 40 x 40)."""
    from PIL import Image

    n = crops.shape[0]
    cells = cells or max(2, min(40, math.ceil(math.sqrt(n))))
    assign = grid_assignment(uniform.double().numpy(), cells)
    th = thumbnails(crops, thumb)
    canvas = th[assign].transpose(0, 2, 1, 3).reshape(cells * thumb, cells * thumb)
    Image.fromarray(canvas, mode="L").save(path)
    return Path(path)


# -- interactive HTML ---------------------------------------------------------------------------
def thumb_size_for(n: int) -> int:
    """Thumbnail side [px] in the HTML page: smaller for big collections (page size)."""
    return 64 if n <= 2000 else 48 if n <= 8000 else 32


def _atlases(th: np.ndarray, per_row: int) -> list[str]:
    """Sprite atlases (JPEG data URIs) of thumbnails [N, s, s], ``per_row`` x ``per_row`` each."""
    from PIL import Image

    n, s, _ = th.shape
    per = per_row * per_row
    out = []
    for a0 in range(0, n, per):
        chunk = th[a0:a0 + per]
        rows = math.ceil(chunk.shape[0] / per_row)
        pad = np.zeros((rows * per_row - chunk.shape[0], s, s), np.uint8)
        sheet = np.concatenate([chunk, pad]).reshape(rows, per_row, s, s).transpose(0, 2, 1, 3) \
            .reshape(rows * s, per_row * s)
        buf = io.BytesIO()
        Image.fromarray(sheet, mode="L").save(buf, format="JPEG", quality=88)
        out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def _meta_text(m: dict[str, Any]) -> dict[str, str]:
    keep = {}
    for k, v in m.items():
        if k == "file":
            continue
        keep[k] = v if isinstance(v, str) else json.dumps(v)
    return keep


def write_html(path: str | Path, crops: torch.Tensor, result: MapResult, names: list[str],
               metadata: list[dict[str, Any]], title: str = "em-accel map",
               thumb: int | None = None) -> Path:
    """A self-contained page (no server, no network): thumbnails in embedded sprite atlases on
    a canvas with pan (drag) and zoom (wheel, +/-), the uniformly separated grid or the t-SNE
    layout, hover for the image, name and metadata, click for the 5 nearest images."""
    n = crops.shape[0]
    thumb = thumb or thumb_size_for(n)
    per_row = max(1, 4096 // thumb)
    th = thumbnails(crops, thumb)
    y = result.embedding.double().numpy()
    lo, hi = y.min(0), y.max(0)
    yn = (y - lo) / np.where(hi > lo, hi - lo, 1.0)
    data = {
        "title": title, "n": n, "thumb": thumb, "perRow": per_row,
        "uniform": np.round(result.uniform.double().numpy(), 5).ravel().tolist(),
        "tsne": np.round(yn, 5).ravel().tolist(),
        "names": names, "meta": [_meta_text(m) for m in metadata],
        "files": [m.get("file", "") for m in metadata],
        "nb": result.neighbours.reshape(-1).tolist(), "k": int(result.neighbours.shape[1]),
        "mean": [int(v) for v in th.reshape(n, -1).mean(1).round()],
    }
    html = _TEMPLATE.replace("__TITLE__", _escape(title)) \
        .replace("__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/")) \
        .replace("__ATLASES__", json.dumps(_atlases(th, per_row)))
    Path(path).write_text(html, encoding="utf-8")
    return Path(path)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html,body{margin:0;height:100%;font:13px system-ui,sans-serif;background:#1b1d21;color:#ddd;overflow:hidden}
#map{position:absolute;left:0;top:0;width:calc(100% - 300px);height:100%;display:block;cursor:grab;background:#111}
#side{position:absolute;top:0;right:0;width:300px;bottom:0;overflow-y:auto;background:#24272c;padding:8px;box-sizing:border-box}
#side h2{font-size:13px;margin:6px 0;color:#fff}
#bar{position:absolute;left:8px;top:8px;background:rgba(0,0,0,.6);padding:4px 6px;border-radius:4px}
#bar button{font:inherit;margin-right:4px}
#hover{position:absolute;pointer-events:none;display:none;background:#000d;border:1px solid #888;padding:4px;max-width:260px;word-break:break-all}
#hover canvas,#sel canvas{image-rendering:pixelated;display:block}
.nb{display:flex;gap:6px;align-items:center;margin:4px 0;cursor:pointer}
.nb span{word-break:break-all}
@media (max-width:700px){#map{width:100%;height:60%}#side{top:60%;width:100%;height:40%}#hover{max-width:180px}}
table{border-collapse:collapse}td{padding:1px 4px;vertical-align:top}td:first-child{white-space:nowrap;color:#aaa}
</style></head><body>
<canvas id="map"></canvas>
<div id="bar"><button id="mode">t-SNE layout</button><button id="zin">+</button><button id="zout">&minus;</button><button id="reset">fit</button><span id="count"></span></div>
<div id="hover"></div>
<div id="side"><h2>__TITLE__</h2><div id="help">Drag to pan, wheel to zoom, hover for an image, click for its 5 nearest images.</div><div id="sel"></div></div>
<script>
"use strict";
const D = __DATA__;
const ATLAS_SRC = __ATLASES__;
const cv = document.getElementById("map"), ctx = cv.getContext("2d");
const hov = document.getElementById("hover"), sel = document.getElementById("sel");
const atlases = [];
let loaded = 0, layout = "uniform", selected = -1, hovered = -1;
const view = {s: 1, x: 0, y: 0};   // screen = world * s + (x, y); world = unit square
const t0 = performance.now();
window.emMap = {ready: false, loadMs: null, hovered: -1, selected: -1, draws: 0};
function pos(i) {
  const a = layout === "uniform" ? D.uniform : D.tsne;
  return [a[2 * i], 1 - a[2 * i + 1]];
}
function size() {
  cv.width = cv.clientWidth * devicePixelRatio; cv.height = cv.clientHeight * devicePixelRatio;
}
function fit() {
  const w = cv.width, h = cv.height, m = Math.min(w, h) * 0.96 / (1 + 1 / Math.sqrt(D.n));
  view.s = m; view.x = (w - m) / 2; view.y = (h - m) / 2; draw();
}
function cellPx() { return view.s / Math.sqrt(D.n) * 0.95; }
function sprite(i) {
  const per = D.perRow * D.perRow, a = Math.floor(i / per), r = i % per;
  return [atlases[a], (r % D.perRow) * D.thumb, Math.floor(r / D.perRow) * D.thumb];
}
function draw() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, cv.width, cv.height);
  const c = Math.max(1.5, cellPx());
  const w = cv.width, h = cv.height;
  for (let i = 0; i < D.n; i++) {
    const p = pos(i), sx = p[0] * view.s + view.x - c / 2, sy = p[1] * view.s + view.y - c / 2;
    if (sx > w || sy > h || sx + c < 0 || sy + c < 0) continue;
    if (c < 6 || loaded < ATLAS_SRC.length) {
      const g = D.mean[i]; ctx.fillStyle = "rgb(" + g + "," + g + "," + g + ")";
      ctx.fillRect(sx, sy, c, c);
    } else {
      const s = sprite(i); ctx.drawImage(s[0], s[1], s[2], D.thumb, D.thumb, sx, sy, c, c);
    }
  }
  const mark = (i, col) => { if (i < 0) return; const p = pos(i); ctx.strokeStyle = col; ctx.lineWidth = 2 * devicePixelRatio;
    ctx.strokeRect(p[0] * view.s + view.x - c / 2, p[1] * view.s + view.y - c / 2, c, c); };
  if (selected >= 0) { for (let j = 0; j < D.k; j++) mark(D.nb[selected * D.k + j], "#3af"); mark(selected, "#f80"); }
  mark(hovered, "#ff0");
  window.emMap.draws++;
}
function pick(ex, ey) {   // the item under a screen point (client px), or -1
  const r = cv.getBoundingClientRect(), x = (ex - r.left) * devicePixelRatio, y = (ey - r.top) * devicePixelRatio;
  const half = Math.max(1.5, cellPx()) / 2;
  let best = -1, bd = Infinity;
  for (let i = 0; i < D.n; i++) {
    const p = pos(i), dx = p[0] * view.s + view.x - x, dy = p[1] * view.s + view.y - y;
    if (Math.abs(dx) <= half && Math.abs(dy) <= half) { const d = dx * dx + dy * dy; if (d < bd) { bd = d; best = i; } }
  }
  return best;
}
function thumbCanvas(i, px) {
  const c = document.createElement("canvas"); c.width = c.height = px;
  const g = c.getContext("2d"); g.imageSmoothingEnabled = false;
  const s = sprite(i); if (s[0]) g.drawImage(s[0], s[1], s[2], D.thumb, D.thumb, 0, 0, px, px);
  return c;
}
function metaTable(i) {
  const t = document.createElement("table"); const m = Object.assign({file: D.files[i]}, D.meta[i]);
  for (const k in m) { const tr = t.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = m[k]; }
  return t;
}
function showHover(i, ex, ey) {
  hovered = i; window.emMap.hovered = i;
  if (i < 0) { hov.style.display = "none"; draw(); return; }
  hov.replaceChildren(thumbCanvas(i, Math.min(192, 4 * D.thumb)));
  const name = document.createElement("div"); name.className = "name"; name.textContent = D.names[i];
  hov.append(name, metaTable(i));
  hov.style.display = "block";
  const r = cv.getBoundingClientRect();
  hov.style.left = Math.min(ex + 16, r.right - 270) + "px"; hov.style.top = Math.min(ey + 16, r.bottom - 320) + "px";
  draw();
}
function select(i) {
  selected = i; window.emMap.selected = i;
  sel.replaceChildren();
  if (i < 0) { draw(); return; }
  const h = document.createElement("h2"); h.textContent = "Selected: " + D.names[i];
  sel.append(h, thumbCanvas(i, 128), metaTable(i));
  const h2 = document.createElement("h2"); h2.textContent = "Nearest " + D.k + " images"; sel.append(h2);
  for (let j = 0; j < D.k; j++) {
    const q = D.nb[i * D.k + j], row = document.createElement("div"); row.className = "nb";
    const sp = document.createElement("span"); sp.textContent = (j + 1) + ". " + D.names[q];
    row.append(thumbCanvas(q, 64), sp); row.onclick = () => { select(q); centre(q); };
    sel.append(row);
  }
  draw();
}
function centre(i) { const p = pos(i); view.x = cv.width / 2 - p[0] * view.s; view.y = cv.height / 2 - p[1] * view.s; draw(); }
function zoom(f, cx, cy) { view.x = cx - (cx - view.x) * f; view.y = cy - (cy - view.y) * f; view.s *= f; draw(); }
let drag = null, moved = false;
cv.addEventListener("mousedown", e => { drag = [e.clientX, e.clientY, view.x, view.y]; moved = false; cv.style.cursor = "grabbing"; });
window.addEventListener("mouseup", e => {
  if (drag && !moved && e.target === cv) select(pick(e.clientX, e.clientY));
  drag = null; cv.style.cursor = "grab";
});
cv.addEventListener("mousemove", e => {
  if (drag) {
    const dx = e.clientX - drag[0], dy = e.clientY - drag[1];
    if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
    view.x = drag[2] + dx * devicePixelRatio; view.y = drag[3] + dy * devicePixelRatio; draw(); return;
  }
  const i = pick(e.clientX, e.clientY); if (i !== hovered) showHover(i, e.clientX, e.clientY);
});
cv.addEventListener("mouseleave", () => showHover(-1));
cv.addEventListener("wheel", e => { e.preventDefault(); const r = cv.getBoundingClientRect();
  zoom(Math.exp(-e.deltaY * 0.0015), (e.clientX - r.left) * devicePixelRatio, (e.clientY - r.top) * devicePixelRatio); }, {passive: false});
document.getElementById("zin").onclick = () => zoom(1.5, cv.width / 2, cv.height / 2);
document.getElementById("zout").onclick = () => zoom(1 / 1.5, cv.width / 2, cv.height / 2);
document.getElementById("reset").onclick = fit;
document.getElementById("mode").onclick = e => { layout = layout === "uniform" ? "tsne" : "uniform";
  e.target.textContent = layout === "uniform" ? "t-SNE layout" : "uniform grid"; draw(); };
window.addEventListener("keydown", e => { if (e.key === "+") zoom(1.5, cv.width / 2, cv.height / 2);
  if (e.key === "-") zoom(1 / 1.5, cv.width / 2, cv.height / 2); });
window.addEventListener("resize", () => { size(); fit(); });
window.emMap.screenPos = i => { const p = pos(i), r = cv.getBoundingClientRect();
  return [r.left + (p[0] * view.s + view.x) / devicePixelRatio, r.top + (p[1] * view.s + view.y) / devicePixelRatio]; };
document.getElementById("count").textContent = D.n + " images";
size(); fit();
ATLAS_SRC.forEach((src, a) => { const im = new Image(); im.onload = () => { loaded++; if (loaded === ATLAS_SRC.length) {
  draw(); window.emMap.loadMs = performance.now() - t0; window.emMap.ready = true; } }; im.src = src; atlases[a] = im; });
if (ATLAS_SRC.length === 0) { window.emMap.ready = true; window.emMap.loadMs = performance.now() - t0; }
</script></body></html>
"""
