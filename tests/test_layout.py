"""The package's shape (ARCHITECTURE.md): no import cycles, arrows point down, each package says what it owns."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "frozen"
# Which packages a package may not import, at module level or inside a function:
# entry-point code -> train/eval/app -> model/data/prep -> core (shared layer) -> config/errors.
FORBIDDEN = {
    "model": {"data", "prep", "train", "eval", "app"},
    "data": {"prep", "train", "eval", "app"},
    "prep": {"train", "eval", "app"},
    "train": {"eval", "app"},
    "eval": {"train", "app"},
}
CORE_MAY_IMPORT = {"core", "errors"}  # the shared layer sits below every other frozen package
# Imports inside functions, allowed only where they keep start-up light: heavy or optional third-party
# packages (transformers, timm, wandb, playwright, submitit...) off the paths that must answer fast
# (`import frozen`, preflight before any model loads, the CLIs). A new one is a decision: add it here
# (module -> what it imports in a function) and keep the count within LAZY_BUDGET.
LAZY_ALLOWED = {
    "frozen": {"frozen.model"},
    "frozen.app.browser": {"playwright.sync_api"},
    "frozen.bench.lib": {"easy_vqa"},
    "frozen.cli": {"hydra.errors", "omegaconf.errors", "hydra._internal.utils"},
    "frozen.config": {"hydra.core.config_store"},
    "frozen.core.dist": {"torch.multiprocessing", "submitit.helpers"},
    "frozen.core.logging": {"wandb"},
    "frozen.core.tiny": {"tokenizers", "transformers", "torch"},
    "frozen.data.samples": {"webdataset.gopen", "webdataset.tariterators"},
    "frozen.eval.episodes": {"easy_vqa"},
    "frozen.eval.metrics": {"pycocoevalcap.bleu.bleu", "pycocoevalcap.cider.cider"},
    "frozen.model.card": {"huggingface_hub"},
    "frozen.model.decoding": {"transformers"},
    "frozen.model.frozen_model": {"torch.utils.checkpoint", "transformers.modeling_layers"},
    "frozen.model.generation": {"transformers"},
    "frozen.model.hub": {"huggingface_hub.errors", "huggingface_hub"},
    "frozen.model.lm": {"transformers", "transformers.utils", "huggingface_hub"},
    "frozen.model.vision": {"timm", "torchvision.transforms.functional", "torchvision"},
    "frozen.preflight": {"frozen.model.lm", "frozen.model.vision", "frozen.model.export"},
    "frozen.prep.easyvqa": {"easy_vqa"},
    "frozen.prep.shards": {"webdataset"},
    "frozen.train.compiled": {"torch._inductor.cpp_builder"},
    "frozen.train.fsdp": {"transformers.modeling_layers", "torch.distributed.device_mesh", "torch.distributed.fsdp",
                          "torch.distributed", "torch.distributed.tensor"},
}
LAZY_BUDGET = 52


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _import_nodes(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``path`` with whether it runs inside a function (lazily)."""
    found = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text()), False)
    return found


def _project_imports(node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> set[str]:
    """The project modules one import statement names (``from frozen.x import y`` names frozen.x.y if a module)."""
    if isinstance(node, ast.ImportFrom):
        if not (node.module and node.module.startswith("frozen")):
            return set()
        names = {f"{node.module}.{a.name}" for a in node.names}
        return {n for n in names if n in mods} or ({node.module} & set(mods))
    return {a.name for a in node.names if a.name in mods}


def _imports(path: Path, mods: dict[str, Path], *, lazy: bool = False) -> set[str]:
    """The project modules ``path`` imports at module level, and inside functions too when ``lazy``."""
    return {n for node, in_function in _import_nodes(path) if lazy or not in_function
            for n in _project_imports(node, mods)}


def _lazy_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of each import inside a function."""
    return [(node.lineno, node.module if isinstance(node, ast.ImportFrom) else alias.name)
            for node, in_function in _import_nodes(path) if in_function
            for alias in (node.names[:1] if isinstance(node, ast.ImportFrom) else node.names)]


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
    """Module-level and function-level imports alike: a lazy import is still a dependency."""
    mods = _modules()
    bad = []
    for m, p in mods.items():
        area = m.split(".")[1] if m.count(".") else ""
        for n in _imports(p, mods, lazy=True):
            target = n.split(".")[1] if n.count(".") else ""
            if target in FORBIDDEN.get(area, ()) or (area == "core" and target not in CORE_MAY_IMPORT):
                bad.append(f"{m} imports {n}")
    assert not bad, sorted(bad)


def test_function_level_imports_are_decisions():
    mods = _modules()
    found = {m: _lazy_imports(p) for m, p in sorted(mods.items())}
    new = [f"{mods[m].relative_to(REPO)}:{line} imports {name}" for m, lazy in found.items() for line, name in lazy
           if name not in LAZY_ALLOWED.get(m, set())]
    assert not new, "imports inside functions only where they keep start-up light (then list them here): " + str(new)
    used = {m: {name for _, name in lazy} for m, lazy in found.items()}
    stale = {m: sorted(names - used.get(m, set())) for m, names in LAZY_ALLOWED.items() if names - used.get(m, set())}
    assert not stale, f"no longer imported inside a function, so delete from LAZY_ALLOWED: {stale}"
    count = sum(map(len, found.values()))
    assert count <= LAZY_BUDGET, f"{count} imports inside functions, budget {LAZY_BUDGET}: move the new ones up"


@pytest.mark.parametrize("package", ["frozen.model", "frozen.data", "frozen.prep", "frozen.train", "frozen.eval",
                                     "frozen.app", "frozen.core", "frozen.bench", "frozen.config"])
def test_each_package_says_what_it_owns_and_may_import(package):
    doc = importlib.import_module(package).__doc__ or ""
    assert len(doc.split()) >= 15 and "import" in doc, f"{package}'s docstring should say what it owns and may import"


def test_wheel_lists_every_package_and_ships_conf():
    """pyproject lists the packages (conf/ becomes frozen.conf, which no finder sees) and packs the YAMLs."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    conf = {".".join(("frozen", *p.relative_to(REPO).parts)) for p in [REPO / "conf", *(REPO / "conf").rglob("*")]
            if p.is_dir()}
    assert set(setup["packages"]) == code | conf
    assert setup["package-dir"] == {"frozen.conf": "conf"} and setup["package-data"] == {"*": ["*.yaml"]}


def test_conf_dir_prefers_the_packaged_presets(monkeypatch, tmp_path):
    from frozen.core import conf

    assert (conf.conf_dir() / "train.yaml").is_file() and (conf.conf_dir() / "eval" / "demo.yaml").is_file()
    assert conf.conf_dir().resolve() == (REPO / "conf").resolve()  # a checkout: the repo's own conf/
    installed = ModuleSpec("frozen.conf", None, is_package=True)
    installed.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(conf.importlib.util, "find_spec", lambda name: installed if name == "frozen.conf" else None)
    assert conf.conf_dir() == tmp_path


def test_a_plain_install_finds_the_presets(tmp_path):
    """Installed without -e (a copy of the sources, so the build leaves the checkout untouched): conf/ comes along."""
    src = tmp_path / "src"
    for name in ("frozen", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(tmp_path / "site"), str(src)], check=True, capture_output=True, timeout=300)
    probe = "from frozen.core.conf import conf_dir; from frozen.model.lm import PRESETS_DIR; print(conf_dir(), " \
            "len(list(PRESETS_DIR.glob('*.yaml'))))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert out == [str(tmp_path / "site" / "frozen" / "conf"), str(len(list((REPO / "conf" / "lm").glob("*.yaml"))))]
