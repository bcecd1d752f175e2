"""The demo's HTML report: one self-contained file (PNGs as data URIs) plus the PNGs and a
JSON summary of every stage's numbers and time."""
from __future__ import annotations

import base64
import html
import json
import platform
import re
from pathlib import Path

import numpy as np

from .context import DemoContext

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1320px;
color:#1d232a;background:#fafafa}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:0 0 6px}
.meta{color:#5b6570;font-size:14px;margin-bottom:18px}
section{background:#fff;border:1px solid #dde2e7;border-radius:8px;padding:16px 18px;margin:14px 0}
.time{float:right;color:#5b6570;font-size:14px}
.panels{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
figure{margin:0;width:230px} figure img{width:230px;height:auto;image-rendering:pixelated;
border:1px solid #ccd3da;display:block}
figure.large{width:360px} figure.large img{width:360px;image-rendering:auto}
figure.wide{width:740px} figure.wide img{width:740px;image-rendering:auto}
figcaption{font-size:13px;color:#333;margin-top:4px;line-height:1.3}
table{border-collapse:collapse;font-size:14px;margin-top:6px}
td{padding:2px 14px 2px 0;border-bottom:1px solid #eef0f2} td.v{text-align:right;font-variant-numeric:tabular-nums}
p.text{font-size:14px;line-height:1.45;margin:6px 0;max-width:1150px}
.failed{border-color:#e3a0a0;background:#fff6f6} .note{color:#5b6570;font-size:14px}
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def save_png(image: np.ndarray, path: Path) -> Path:
    """A 2-D array as a grey PNG with 0.5/99.5-percentile limits (an RGB [H, W, 3] array as is)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        plt.imsave(path, np.clip(a, 0, 1))
        return path
    if a.ndim != 2:
        raise ValueError(f"a panel image must be 2-D (or [H, W, 3]), got shape {list(a.shape)}")
    finite = a[np.isfinite(a)]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    plt.imsave(path, np.nan_to_num(a, nan=lo), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    return path


def _figure(caption: str, png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    from PIL import Image

    with Image.open(png) as im:  # figures (plots, image maps) get more room than micrographs
        w, h = im.size
    cls = ' class="wide"' if w >= 400 and w >= 1.6 * h else ' class="large"' if w >= 400 else ""
    return (f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _panel_html(stage: str, k: int, caption: str, image, out_dir: Path) -> str:
    if isinstance(image, (str, Path)):
        path = Path(image)
        if path.suffix.lower() in (".html", ".htm"):
            return (f'<figure class="large"><iframe srcdoc="{html.escape(path.read_text())}" '
                    f'style="width:360px;height:360px;border:1px solid #ccd3da"></iframe>'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return _figure(caption, path)
    png = save_png(image, out_dir / f"{stage}_{k:02d}_{_slug(caption)}.png")
    return _figure(caption, png)


def _number(v: float) -> str:
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == int(v) and abs(v) < 1e9:
        return f"{int(v)}"
    return f"{v:.4g}"


def write_report(report, ctx: DemoContext) -> None:
    """Write ``report.html`` (self-contained), the panel PNGs and ``summary.json``."""
    from .. import __version__

    out = ctx.out_dir
    parts, summary = [], {"seconds": report.seconds, "device": str(ctx.device), "fast": ctx.fast,
                          "seed": ctx.seed, "stages": []}
    absent = [r.name for r in report.stages if r.status == "absent"]
    for rec in report.stages:
        entry = {"name": rec.name, "status": rec.status, "error": rec.error}
        summary["stages"].append(entry)
        if rec.status == "absent":
            continue
        if rec.status == "failed":
            parts.append(f'<section class="failed"><h2>{html.escape(rec.name)}: failed</h2>'
                         f'<p class="note">{html.escape(rec.error)}</p></section>')
            continue
        r = rec.result
        entry.update(title=r.title, seconds=r.seconds, numbers=r.numbers, text=r.text)
        figs = "".join(_panel_html(rec.name, k, cap, img, out) for k, (cap, img) in enumerate(r.panels))
        rows = "".join(f'<tr><td>{html.escape(k)}</td><td class="v">{_number(v)}</td></tr>'
                       for k, v in r.numbers.items())
        parts.append(f'<section><span class="time">{r.seconds:.1f} s</span>'
                     f"<h2>{html.escape(r.title)}</h2>"
                     + (f'<p class="text">{html.escape(r.text)}</p>' if r.text else "")
                     + f'<div class="panels">{figs}</div>'
                     + (f"<table>{rows}</table>" if rows else "") + "</section>")
    note = (f'<p class="note">Stages not in this build: {", ".join(absent)}.</p>' if absent else "")
    meta = (f"em-accel {__version__} · {html.escape(str(ctx.device))} · "
            f"{html.escape(platform.machine())} · seed {ctx.seed}"
            f"{' · --fast' if ctx.fast else ''} · total {report.seconds:.1f} s")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>em-accel demo</title><style>{_CSS}</style></head><body>"
            f"<h1>em-accel demo: simulate → scan → complete → denoise → map</h1>"
            f'<div class="meta">{meta}</div>{"".join(parts)}{note}</body></html>')
    report.html.write_text(page, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
