"""Layers: the installed package never imports the checkout-only bench/ harness, and
``em-accel bench`` says clearly what to do when the harness is not there."""
from __future__ import annotations

import ast
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
