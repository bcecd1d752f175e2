"""Layers: the installed package never imports the checkout-only bench/ harness, and
``em-accel bench`` says clearly what to do when the harness is not there."""
from __future__ import annotations

import ast
import re
import importlib
from pathlib import Path

import pytest

import em_accel
from em_accel import cli

PACKAGE = Path(em_accel.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_package_never_imports_bench_or_tests():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        bad = {m for m in _imported_modules(path)
               if m.split(".")[0] in ("bench", "python_tests", "pytest")}
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not offenders, f"the installed package imports checkout-only code: {offenders}"


def test_bench_command_without_a_checkout_says_what_to_do(tmp_path, monkeypatch):
    real = importlib.import_module

    def no_bench(name, *args, **kwargs):
        if name.split(".")[0] == "bench":
            raise ModuleNotFoundError(f"No module named {name!r}", name="bench")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cli.importlib, "import_module", no_bench)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="source checkout"):
        cli.main(["bench", "--quick", "alrc"])


def test_bench_command_finds_the_checkout_from_its_root(monkeypatch):
    root = PACKAGE.parent
    if not (root / "bench" / "__main__.py").is_file():
        pytest.skip("not a source checkout")
    monkeypatch.chdir(root)
    assert cli._bench_harness().main.__module__ == "bench.__main__"


# Background documents the project was written from; the repository must not cite them (a
# reader cannot open them).
CITATION_ALLOWED: set[str] = set()


def test_repository_cites_no_document_it_lacks():
    root = PACKAGE.parent
    pattern = re.compile(r"SEED_SPEC|\.\./shared|shared/[A-Z_]+\.md|TRAINING_NOTES|"
                         r"MULTISLICE_NOTES|TSNE_NOTES")
    hits = []
    for sub in ("em_accel", "python_tests", "bench", "docs", "csrc"):
        for path in (root / sub).rglob("*"):
            rel = path.relative_to(root).as_posix()
            if path.suffix in (".py", ".md", ".h", ".cpp", ".cu", ".txt", ".sh") and \
                    rel not in CITATION_ALLOWED and path.name != "test_layers.py":
                hits += [f"{rel}: {m.group(0)}" for m in pattern.finditer(path.read_text(
                    encoding="utf-8", errors="replace"))]
    readme = (root / "README.md").read_text(encoding="utf-8")
    hits += [f"README.md: {m.group(0)}" for m in pattern.finditer(readme)]
    assert not hits, hits


def test_bench_devices_can_be_narrowed_by_the_environment(monkeypatch):
    from bench.harness import available_devices

    monkeypatch.delenv("EM_ACCEL_BENCH_DEVICES", raising=False)
    found = available_devices()
    assert found[0] == "cpu"
    monkeypatch.setenv("EM_ACCEL_BENCH_DEVICES", "cuda")
    assert available_devices() == [d for d in found if d == "cuda"]
    monkeypatch.setenv("EM_ACCEL_BENCH_DEVICES", "cpu,cuda")
    assert available_devices() == found
