"""The interactive map page in a real headless browser (Debian's Chromium via Playwright): it
renders from disk with no server, hover shows an image and click shows its neighbours.

Skips only when Chromium is not installed (CI installs it: .ci/run)."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def map_dir(tmp_path_factory):
    import tifffile

    from em_accel.data import synthetic_micrograph
    from em_accel.embed.mapping import make_map

    src = tmp_path_factory.mktemp("images")
    for i in range(36):
        img = synthetic_micrograph(96 + 16 * (i % 3), i)
        tifffile.imwrite(src / f"img_{i:02d}.tif", img)
    (src / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path_factory.mktemp("map")
    s = make_map([src], out, encoder="pca", n_iter=250, dihedral=False, progress=False)
    assert s.n_images == 36 and [Path(p).name for p, _ in s.skipped] == ["broken.tif"]
    return out


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)


def test_map_page_renders_hovers_and_clicks(map_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    html = (map_dir / "map.html").resolve()
    text = html.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html.as_uri())
        page.wait_for_function("window.emMap && window.emMap.ready", timeout=30_000)
        load_ms = page.evaluate("window.emMap.loadMs")
        shot0 = page.screenshot(path=str(map_dir / "shot_map.png"))
        # the map canvas is drawn: many distinct grey levels where thumbnails are
        canvas = _pixels(shot0)[:, :700]
        assert (canvas > 40).mean() > 0.2 and len(np.unique(canvas)) > 50

        i = 7
        x, y = page.evaluate(f"window.emMap.screenPos({i})")
        page.mouse.move(x, y)
        page.wait_for_function(f"window.emMap.hovered === {i}", timeout=5_000)
        assert page.is_visible("#hover")
        assert page.inner_text("#hover").startswith(f"img_")
        shot1 = page.screenshot(path=str(map_dir / "shot_hover.png"))
        assert np.abs(_pixels(shot1) - _pixels(shot0)).sum() > 1000

        page.mouse.click(x, y)
        page.wait_for_function(f"window.emMap.selected === {i}", timeout=5_000)
        names = page.eval_on_selector_all("#sel .nb span", "els => els.map(e => e.textContent)")
        shot2 = page.screenshot(path=str(map_dir / "shot_click.png"))
        assert np.abs(_pixels(shot2)[:, 700:] - _pixels(shot1)[:, 700:]).sum() > 1000

        # the neighbours shown are the index's: same names, in order
        index = json.loads((map_dir / "index.json").read_text())
        from em_accel.embed.index import Index
        idx = Index.load(map_dir)
        import torch
        nb = idx.search(idx.features[i:i + 1], 5, exclude=torch.tensor([i])).indices[0].tolist()
        assert [n.split(". ", 1)[1] for n in names] == [index["names"][j] for j in nb]

        # zoom in changes the drawing; pan with a drag
        page.mouse.move(350, 350)
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(200)
        shot3 = page.screenshot()
        assert np.abs(_pixels(shot3)[:, :700] - _pixels(shot2)[:, :700]).sum() > 1000
        browser.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    (map_dir / "load_ms.json").write_text(json.dumps({"load_ms": load_ms}))
    print(f"map page load time: {load_ms:.0f} ms (36 images)")
    assert load_ms > 0
