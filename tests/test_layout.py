"""The package's shape (ARCHITECTURE.md): no import cycles, arrows point down, each package says what it owns."""

from __future__ import annotations

import ast
import importlib
import tomllib
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "frozen"
# Which packages a package may not import at module level: entry-point code -> train/eval -> model/data -> config.
FORBIDDEN = {
    "model": {"data", "prep", "train", "eval", "app"},
    "data": {"prep", "train", "eval", "app"},
    "prep": {"train", "eval", "app"},
    "train": {"eval", "app"},
    "eval": {"app"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports at module level (imports inside functions are lazy on purpose)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("frozen"):
            names = {f"{node.module}.{a.name}" for a in node.names}
            found |= {n for n in names if n in mods} or ({node.module} & set(mods))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in mods}
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(p, mods) for m, p in mods.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])


def test_imports_point_down():
    mods = _modules()
    bad = []
    for m, p in mods.items():
        area = m.split(".")[1] if m.count(".") else ""
        for n in _imports(p, mods):
            target = n.split(".")[1] if n.count(".") else ""
            if target in FORBIDDEN.get(area, ()):
                bad.append(f"{m} imports {n}")
    assert not bad, bad


@pytest.mark.parametrize("package", ["frozen.model", "frozen.data", "frozen.prep", "frozen.train", "frozen.eval",
                                     "frozen.app"])
def test_each_package_says_what_it_owns_and_may_import(package):
    doc = importlib.import_module(package).__doc__ or ""
    assert len(doc.split()) >= 15 and "import" in doc, f"{package}'s docstring should say what it owns and may import"


def test_wheel_lists_every_package_and_ships_conf():
    """pyproject lists the packages (frozen.conf is the top-level conf/, so no finder sees it) and packs its YAMLs."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(setup["packages"]) == folders | {"frozen.conf"}
    assert setup["package-dir"] == {"frozen.conf": "conf"}
    assert setup["package-data"]["frozen.conf"] == ["**/*.yaml"]


def test_conf_dir_prefers_the_packaged_presets(monkeypatch, tmp_path):
    from frozen.core import conf

    assert (conf.conf_dir() / "train.yaml").is_file() and (conf.conf_dir() / "eval" / "demo.yaml").is_file()
    assert conf.conf_dir().resolve() == (REPO / "conf").resolve()  # a checkout: the repo's own conf/
    installed = ModuleSpec("frozen.conf", None, is_package=True)
    installed.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(conf.importlib.util, "find_spec", lambda name: installed if name == "frozen.conf" else None)
    assert conf.conf_dir() == tmp_path
