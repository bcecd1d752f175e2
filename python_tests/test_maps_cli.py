"""em-accel map / search on a folder of microscope files with bad files among them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from em_accel.cli import main as _cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import tifffile

    from em_accel.data import synthetic_micrograph

    d = tmp_path_factory.mktemp("micrographs")
    for i in range(24):
        img = synthetic_micrograph([96, 128, 160][i % 3], 100 + i)
        tifffile.imwrite(d / f"a_{i:02d}.tif", (img * 4000).astype(np.uint16))
    nan = synthetic_micrograph(96, 1)
    nan[10, 10] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    (d / "corrupt.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(d / "flat.tif", np.zeros((100, 100), np.float32))
    np.save(d / "stack.npy", np.stack([synthetic_micrograph(100, 300 + k) for k in range(3)]))
    (d / "notes.txt").write_text("not an image")  # not a microscope suffix: ignored
    from em_accel.io import write_image
    write_image(d / "b.mrc", synthetic_micrograph(120, 400), pixel_size=1.5)
    return d


def test_map_reports_bad_files_and_search_finds_rotated_noisy_copy(folder, tmp_path, capsys):
    out = tmp_path / "map"
    assert _cli(["map", str(folder), "-o", str(out), "--encoder", "pca", "--n-iter", "250", "-q"]) == 0
    printed = capsys.readouterr().out
    skipped = json.loads((out / "skipped.json").read_text())
    assert sorted(s["path"].rsplit("/", 1)[1] for s in skipped) == ["corrupt.tif", "flat.tif", "nan.tif"]
    assert "nan.tif" in printed and "corrupt.tif" in printed
    for f in ("map.png", "map.html", "index.safetensors", "index.json"):
        assert (out / f).stat().st_size > 0
    meta = json.loads((out / "index.json").read_text())
    assert meta["n"] == 24 + 3 + 1 and any(n.startswith("stack.npy[") for n in meta["names"])
    mrc = meta["metadata"][meta["names"].index("b.mrc")]
    assert mrc["pixel_size_A"] == pytest.approx(1.5) and mrc["shape"] == [120, 120]
    from PIL import Image
    png = np.asarray(Image.open(out / "map.png"))
    assert png.ndim == 2 and png.std() > 10

    # a rotated, noisy copy of one file finds that file first
    import tifffile

    from em_accel.data import dihedral, poisson_noise
    src = tifffile.imread(folder / "a_05.tif").astype(np.float32)
    q = poisson_noise(dihedral(torch.from_numpy(src), 3), 300.0,
                      torch.Generator().manual_seed(0)).noisy.numpy()
    tifffile.imwrite(tmp_path / "query.tif", q)
    assert _cli(["search", str(tmp_path / "query.tif"), "--index", str(out), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["neighbours"][0]["name"] == "a_05.tif"
    assert len(hits[0]["neighbours"]) == 5
    # placed (in the orientation that matches) close to the original's place in the map
    from em_accel.embed.index import Index
    index = Index.load(out)
    orig = index.uniform[index.names.index("a_05.tif")]
    assert float(torch.dist(torch.tensor(hits[0]["map_xy"]), orig)) < 0.15


def test_map_with_too_few_images_fails_cleanly(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"nope")
    with pytest.raises(SystemExit, match="usable images"):
        _cli(["map", str(tmp_path), "-o", str(tmp_path / "out"), "--encoder", "pca", "-q"])
    assert (tmp_path / "out" / "skipped.json").exists()


def test_shipped_contrastive_encoder_loads_and_encodes():
    from em_accel.embed.features import encode, load_pretrained

    model = load_pretrained("contrastive")
    x = torch.rand(3, 96, 96)
    f = encode(x, model).features
    assert f.shape == (3, 64) and torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-4)
    with pytest.raises(ValueError, match="name"):
        load_pretrained("nope")


def test_view_features_equal_features_of_transformed_crops():
    from em_accel.embed.contrastive import ContrastiveEncoder
    from em_accel.embed.features import dihedral_views, encode, encode_views

    x = torch.rand(5, 96, 96)
    views = dihedral_views(x)
    assert views.shape == (40, 96, 96) and torch.equal(views[8], x[1])
    st = encode(x, "pca", n_components=3).state
    net = ContrastiveEncoder(widths=(4, 8, 8, 8)).eval()
    for enc, kw in (("raw", {}), ("pca", {"state": st}), (net, {})):
        a = encode_views(x, enc, chunk=2, **kw).features
        b = encode(views, enc, **kw).features.reshape(5, 8, -1)
        assert torch.allclose(a, b, atol=1e-5)
