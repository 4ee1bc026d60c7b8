"""README.md and every docs/*.md cannot rot: links, anchors, make targets, presets and commands are checked.

- every relative link resolves to a file, and every ``#anchor`` to a heading (GitHub's slugs) or an
  ``<a id>`` of the target page;
- every ``make X`` named is a rule of the Makefile;
- every preset named (``experiment=``, ``eval=``, ``lm=``, ``model=``, ``data=``, ``trainer=``, ``logger=``,
  ``hydra/launcher=``) is a file in conf/;
- every command of a ```bash block runs as far as its argument parsing: ``train.py`` / ``evaluate.py``
  overrides compose against the typed schema (and pass its checks), ``scripts/*.py`` flags parse with the
  script's own argparse parser (nothing after the parse runs), other ``scripts/`` files exist.

New pages under docs/ are covered without listing them.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PRESET_GROUPS = ("experiment", "eval", "lm", "model", "data", "trainer", "logger", "hydra/launcher")


def _ids(pages: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in pages]


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (links and headings there are not rendered as such)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-cased, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor ``page`` defines: its headings' slugs (repeats get -1, -2, ...) and ``<a id/name>``."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    prose = _prose(page.read_text())
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", prose))
    return found


def links(page: Path) -> list[str]:
    """The targets of ``page``'s Markdown links and images, outside code."""
    prose = re.sub(r"`[^`\n]*`", "", _prose(page.read_text()))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose)


def link_problems(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... : not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading or <a id> '{anchor}' in {dest.relative_to(REPO)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_links_and_anchors_resolve(page):
    assert link_problems(page) == []


def test_slug_matches_github():
    assert slug("Distributed training: `ddp` or `fsdp`") == "distributed-training-ddp-or-fsdp"
    assert slug("On a GPU: `scripts/gpu_check.sh`") == "on-a-gpu-scriptsgpu_checksh"
    assert slug("Decoding: JPEGs at the size training needs (`data.jpeg_draft`)") == \
        "decoding-jpegs-at-the-size-training-needs-datajpeg_draft"
    assert slug("2026-12-04") == "2026-12-04"
    assert slug("See [the data](data.md), now") == "see-the-data-now"


# ------------------------------------------------------------------------------------------ bash blocks


def bash_commands(page: Path) -> list[str]:
    """The commands of ``page``'s ```bash blocks: continuation lines joined, comments dropped, one per
    ``&&``-joined part."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _words(command: str) -> list[str]:
    """Shell words, placeholders made concrete: ``<run>`` -> ``run``; a bare ``...`` dropped."""
    return [w for w in shlex.split(re.sub(r"<([^<>]*)>", r"\1", command)) if w != "..."]


# ------------------------------------------------------------------------------------------ make targets


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9_-]*)\s*:(?!=)", text, re.M))


def make_targets_named(page: Path) -> set[str]:
    text = page.read_text()
    named = set(re.findall(r"`make ([a-z][a-z0-9_-]*)", text))
    named |= {w[1] for w in map(str.split, bash_commands(page)) if len(w) > 1 and w[0] == "make"}
    return named


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_make_targets_exist(page):
    missing = make_targets_named(page) - makefile_targets()
    assert not missing, f"{page.name} names make targets the Makefile lacks: {sorted(missing)}"


# ------------------------------------------------------------------------------------------ presets


def presets_named(page: Path) -> set[tuple[str, str]]:
    """``(group, option)`` of every ``group=option[,option...]`` the page names, in prose or code."""
    named = set()
    groups = "|".join(re.escape(g) for g in PRESET_GROUPS)
    for group, values in re.findall(rf"(?<![\w./-])({groups})=([\w,]+)", page.read_text()):
        named |= {(group, v) for v in values.split(",") if v}
    return named


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_presets_exist(page):
    missing = sorted(f"{g}={o}" for g, o in presets_named(page) if not (REPO / "conf" / g / f"{o}.yaml").is_file())
    assert not missing, f"{page.name} names presets conf/ lacks: {missing}"


# ------------------------------------------------------------------------------------------ commands


def hydra_overrides(words: list[str], script: str) -> list[list[str]]:
    """The override lists a command line asks for: flags (``-m``) dropped; a sweep ``k=a,b`` gives one list
    per value (``[...]`` lists are one value)."""
    args = [w for w in words[words.index(script) + 1:] if "=" in w and not w.startswith("-")]
    choices = [(k, v.split(",") if not v.startswith("[") else [v]) for k, v in (a.split("=", 1) for a in args)]
    runs = max((len(vals) for _, vals in choices), default=1)
    return [[f"{k}={vals[min(i, len(vals) - 1)]}" for k, vals in choices] for i in range(runs)]


class _Parsed(Exception):
    """Raised by the patched argparse once the outermost parse of a script returns."""


def parse_script_args(script: Path, argv: list[str], monkeypatch) -> argparse.Namespace:
    """Run ``script`` as ``__main__`` with ``argv`` up to its argument parsing, and stop there: the outermost
    ``parse_args``/``parse_known_args`` call returns its namespace through :class:`_Parsed`. A bad flag
    exits 2 (argparse's ``error``) before that."""
    depth = 0

    def stop_after(original):
        def parse(self, *args, **kwargs):
            nonlocal depth
            depth += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth -= 1
            if depth == 0:
                raise _Parsed(result)
            return result
        return parse

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop_after(argparse.ArgumentParser.parse_args))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args",
                        stop_after(argparse.ArgumentParser.parse_known_args))
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    try:
        runpy.run_path(str(script), run_name="__main__")
    except _Parsed as parsed:
        return parsed.args[0]
    raise AssertionError(f"{script.name} finished without parsing its arguments")


def command_problems(page: Path, monkeypatch) -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from frozen.config import evaluate_config_problems, register_configs, train_config_problems

    register_configs()
    problems = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for command in bash_commands(page):
            words = _words(command)
            entry = next((w for w in words if Path(w).name in ("train.py", "evaluate.py")), None)
            script = next((w for w in words if re.match(r"(\./)?scripts/", w)), None)
            if entry is not None and (words[0].endswith("python") or words[0] == "torchrun"):
                config, check = ("train", train_config_problems) if entry.endswith("train.py") else \
                    ("eval", evaluate_config_problems)
                for overrides in hydra_overrides(words, entry):
                    try:
                        found = check(compose(config, overrides=overrides))
                    except (HydraException, OmegaConfBaseException) as err:
                        found = [f"{type(err).__name__}: {str(err).splitlines()[0]}"]
                    problems += [f"{command}: {p}" for p in found]
            elif script is not None and words[0] in (script, "python", ".venv/bin/python", "bash"):
                path = REPO / script
                if not path.is_file():
                    problems.append(f"{command}: no file {script}")
                elif path.suffix == ".py":
                    try:
                        parse_script_args(path, words[words.index(script) + 1:], monkeypatch)
                    except SystemExit as err:
                        problems.append(f"{command}: {script} rejects its arguments (exit {err.code})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_bash_commands_compose(page, monkeypatch, capsys):
    problems = command_problems(page, monkeypatch)
    assert problems == [], "\n".join(problems) + "\n" + capsys.readouterr().err[-2000:]


def test_every_page_is_checked_and_has_commands():
    """The glob finds the pages, and the checks above actually see commands (a parser change that found none
    would pass vacuously)."""
    names = {p.name for p in PAGES}
    assert {"README.md", "training.md", "evaluation.md", "data.md", "reproducibility.md"} <= names
    readme = bash_commands(REPO / "README.md")
    assert sum("train.py" in c for c in readme) >= 5 and sum("evaluate.py" in c for c in readme) >= 2
    assert {"demo", "test", "eval-fewshot", "compare", "lmms-eval", "app"} <= make_targets_named(REPO / "README.md")
    assert sum("make_shards.py" in c for c in bash_commands(REPO / "docs" / "data.md")) >= 5
